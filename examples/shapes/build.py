"""Regenerate the shapes example: train the big CNN, write model.pt, data/*.pt, README.md.

Run from anywhere:  python examples/shapes/build.py
Everything is deterministic (seeded numpy / torch, deterministic algorithms,
fixed thread count), so re-running reproduces the same numbers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import shapes  # same folder (the script's directory is on sys.path)
import torch
import torch.nn.functional as F
import yaml
from model import NUM_CLASSES, make_model

HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------- settings
THREADS = 2
TRAIN_PER_CLASS = 700  # per class AND per style
VAL_PER_CLASS = 100  # per class and per style
EPOCHS = 10
BATCH = 128
LR = 2e-3
WEIGHT_DECAY = 1e-4

SEARCH_PER_CLASS = 200  # filled
IID_PER_CLASS = 100  # filled, held out
SKETCH_PER_CLASS = 100  # outline style

# Seeds: every split has its own, all distinct from each other.
SEED_TORCH = 0
SEED_TRAIN = {"filled": 1001, "sketch": 1002}
SEED_VAL = {"filled": 2001, "sketch": 2002}
SEED_SEARCH = 3001
SEED_IID = 3002
SEED_SKETCH = 3003


def load_task() -> dict:
    with open(HERE / "task.yaml") as f:
        return yaml.safe_load(f)


def split(n_per_class, classes, style, seed):
    x, y = shapes.make_split(n_per_class, classes=classes, styles=(style,), seed=seed)
    return torch.from_numpy(x), torch.from_numpy(y)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Label-preserving dihedral augmentation (all classes are drawn at any
    rotation and mirrored): one random rot90 per batch, a random horizontal flip per image."""
    k = int(torch.randint(0, 4, (1,), generator=g))
    x = torch.rot90(x, k, dims=(2, 3))
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    return torch.where(flip[:, None, None, None], torch.flip(x, dims=(3,)), x)


@torch.no_grad()
def logits_of(model, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + 512]) for i in range(0, len(x), 512)])


def accuracy(model, x, y, outputs=None) -> float:
    z = logits_of(model, x)
    if outputs is not None:
        z = z[:, outputs]
    return float((z.argmax(1) == y).float().mean())


def train(model, x, y, g) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = (len(x) + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=EPOCHS * steps_per_epoch, pct_start=0.2
    )
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(x), BATCH):
            idx = perm[i : i + BATCH]
            xb, yb = augment(x[idx], g), y[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            total += len(idx)
        print(
            f"  epoch {epoch + 1:2d}/{EPOCHS}  loss {loss_sum / total:.4f}  "
            f"train acc (augmented, train mode) {correct / total:.4f}",
            flush=True,
        )


def save_split(path: Path, x: torch.Tensor, y: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"x": x.contiguous().float(), "y": y.contiguous().long()}, path)


def remap(y: torch.Tensor, outputs: list[int]) -> torch.Tensor:
    lut = torch.full((NUM_CLASSES,), -1, dtype=torch.int64)
    lut[torch.tensor(outputs)] = torch.arange(len(outputs))
    out = lut[y]
    assert (out >= 0).all()
    return out


def main() -> None:
    assert NUM_CLASSES == len(shapes.CLASSES)
    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED_TORCH)
    np.random.seed(SEED_TORCH)
    torch.use_deterministic_algorithms(True)

    task = load_task()
    outputs = [int(i) for i in task["outputs"]]
    task_names = [shapes.CLASSES[i] for i in outputs]
    all_classes = list(range(NUM_CLASSES))

    # ------------------------------------------------------------ data
    t0 = time.time()
    tr = {s: split(TRAIN_PER_CLASS, all_classes, s, SEED_TRAIN[s]) for s in shapes.STYLES}
    va = {s: split(VAL_PER_CLASS, all_classes, s, SEED_VAL[s]) for s in shapes.STYLES}
    x_train = torch.cat([tr[s][0] for s in shapes.STYLES])
    y_train = torch.cat([tr[s][1] for s in shapes.STYLES])
    print(
        f"train set: {len(y_train)} images ({NUM_CLASSES} classes x {len(shapes.STYLES)} styles "
        f"x {TRAIN_PER_CLASS}), generated in {time.time() - t0:.1f}s",
        flush=True,
    )

    # ------------------------------------------------------------ train
    g = torch.Generator().manual_seed(SEED_TORCH)
    model = make_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters", flush=True)
    t1 = time.time()
    train(model, x_train, y_train, g)
    train_time = time.time() - t1
    print(f"training time: {train_time:.1f}s", flush=True)
    model.eval()

    # ------------------------------------------------------------ all-class accuracy
    acc_all = {}
    for s in shapes.STYLES:
        acc_all[("train", s)] = accuracy(model, *tr[s])
        acc_all[("val", s)] = accuracy(model, *va[s])
        print(
            f"all {NUM_CLASSES} classes, {s:6s}: train {acc_all[('train', s)]:.4f}  "
            f"val {acc_all[('val', s)]:.4f}"
        )
    per_class = {}
    for s in shapes.STYLES:
        xv, yv = va[s]
        pred = logits_of(model, xv).argmax(1)
        per_class[s] = [float((pred[yv == c] == c).float().mean()) for c in all_classes]
    print("val per-class accuracy (filled / sketch):")
    for c in all_classes:
        print(
            f"  {shapes.CLASSES[c]:10s} {per_class['filled'][c]:.3f} / {per_class['sketch'][c]:.3f}"
        )

    # ------------------------------------------------------------ task data
    data_specs = {
        "search": (SEARCH_PER_CLASS, "filled", SEED_SEARCH),
        "iid": (IID_PER_CLASS, "filled", SEED_IID),
        "sketch": (SKETCH_PER_CLASS, "sketch", SEED_SKETCH),
    }
    acc_task = {}
    acc_task_full = {}
    for name, (n, style, seed) in data_specs.items():
        x, y = split(n, outputs, style, seed)
        y = remap(y, outputs)
        save_split(HERE / "data" / f"{name}.pt", x, y)
        acc_task[name] = accuracy(model, x, y, outputs)
        # argmax over ALL logits, counted correct only if it is the right task class
        z = logits_of(model, x).argmax(1)
        acc_task_full[name] = float((z == torch.tensor(outputs)[y]).float().mean())
        print(
            f"task {task['name']} [{name:6s}] ({style}, {len(y)} images): "
            f"accuracy over task logits {acc_task[name]:.4f}  "
            f"(argmax over all {NUM_CLASSES} logits {acc_task_full[name]:.4f})"
        )

    # ------------------------------------------------------------ model
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for k, v in state.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
    torch.save(state, HERE / "model.pt")

    write_readme(
        task, task_names, n_params, acc_all, per_class, acc_task, acc_task_full, data_specs, model
    )
    print(f"wrote {HERE / 'model.pt'}, {HERE / 'data'}/*.pt, {HERE / 'README.md'}")


def write_readme(
    task, task_names, n_params, acc_all, per_class, acc_task, acc_task_full, data_specs, model
) -> None:
    cls_list = ", ".join(f"{i} {c}" for i, c in enumerate(shapes.CLASSES))
    rows = "\n".join(
        f"| {s} | {acc_all[('train', s)]:.4f} | {acc_all[('val', s)]:.4f} |" for s in shapes.STYLES
    )
    pc = "\n".join(
        f"| {i} {c} | {per_class['filled'][i]:.3f} | {per_class['sketch'][i]:.3f} |"
        for i, c in enumerate(shapes.CLASSES)
    )
    trows = "\n".join(
        f"| {name} | {style} | {n * len(task_names)} | {acc_task[name]:.4f} | {acc_task_full[name]:.4f} |"
        for name, (n, style, _) in data_specs.items()
    )
    text = f"""# shapes: a big general CNN and a narrow task

A self-contained legoc example. Everything is generated procedurally (no
downloads) and deterministically by `build.py`.

## Data

`shapes.py` is a pure-numpy rasteriser of 32x32 grey-scale images of
{len(shapes.CLASSES)} classes:

{cls_list}

Each class is a polygon placed at a random position, scale (7-12.5 px) and
rotation (mirrored half of the time), rasterised from its signed-distance
function with anti-aliasing, random foreground/background brightness and mild
Gaussian noise. Two styles:

* **filled** ("photos"): interior filled;
* **sketch**: outline only, stroke 1-2.5 px, with a slightly jittered outline.

## Model

`model.py:make_model` (no arguments) builds the "big general" CNN: input
(B, 1, 32, 32) float32 in [0, 1], output logits (B, {len(shapes.CLASSES)}); traceable with
`torch.fx.symbolic_trace`. conv-bn-relu-pool x2, one residual block
(`relu(x + bn4(conv4(relu(bn3(conv3(x))))))`), pool, conv-bn-relu,
`torch.flatten(x, 1)`, `fc1` (2048 -> 256), `fc2` (256 -> {len(shapes.CLASSES)}).
**{n_params:,} parameters.**

```
{model}
```

It is trained by `build.py` on all {len(shapes.CLASSES)} classes in both styles
({TRAIN_PER_CLASS} images per class per style, {EPOCHS} epochs, Adam + one-cycle LR, dihedral
augmentation). The trained weights are `model.pt` (a `state_dict`, eval-mode
BatchNorm statistics included).

Accuracy of the full model over all {len(shapes.CLASSES)} classes
({VAL_PER_CLASS} held-out images per class per style for val):

| style | train | val |
|---|---|---|
{rows}

Per-class val accuracy:

| class | filled | sketch |
|---|---|---|
{pc}

## Task

`task.yaml` (`{task["name"]}`): the classes {", ".join(task_names)}, i.e.
`outputs: {task["outputs"]}` (indices into the model's logits). The data files
hold only these classes, with `y` = index into `outputs` (0..{len(task_names) - 1}):

* `data/search.pt`: filled style, {SEARCH_PER_CLASS} per class (seed {SEED_SEARCH});
* `data/iid.pt`: filled style, held out, {IID_PER_CLASS} per class (seed {SEED_IID});
* `data/sketch.pt`: sketch style, {SKETCH_PER_CLASS} per class (seed {SEED_SKETCH}).

Each is `{{"x": float32 [N,1,32,32], "y": int64 [N]}}`. Their seeds differ from
the training and validation seeds. Full model on the task: accuracy of the
argmax over the task's logits (`logits[:, outputs]`, what legoc measures), and,
for reference, of the argmax over all {NUM_CLASSES} logits:

| split | style | N | accuracy (task logits) | accuracy (all logits) |
|---|---|---|---|---|
{trows}

The search split has filled shapes only, so the `sketch` eval split measures
whether an extracted sub-network keeps the big model's style-general features.

## Regenerate

```
python examples/shapes/build.py
```

(works from any directory; about two minutes on 2 CPU cores, of which about
90 s training. Deterministic: with the same torch/numpy versions, re-running
reproduces `model.pt`, the data files and this README byte for byte).
"""
    (HERE / "README.md").write_text(text)


if __name__ == "__main__":
    main()
