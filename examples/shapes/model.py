"""The "big general" shapes CNN (all classes, both styles).

Referenced by legoc as ``examples/shapes/model.py:make_model``.  Input
(B, 1, 32, 32) float32 in [0, 1]; output logits (B, 12).  Traceable with
``torch.fx.symbolic_trace`` (no data-dependent control flow).
"""

import torch
from torch import nn

NUM_CLASSES = 12  # == len(shapes.CLASSES)


class ShapesNet(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        # stem: 32x32 -> 16x16
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        # 16x16 -> 8x8
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        # residual block at 8x8: y = x + conv4(relu(bn3(conv3(x))))
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(64)
        self.relu3 = nn.ReLU()
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn4 = nn.BatchNorm2d(64)
        self.relu4 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(2)
        # 4x4 head conv
        self.conv5 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn5 = nn.BatchNorm2d(128)
        self.relu5 = nn.ReLU()
        # classifier: 128*4*4 -> 256 -> num_classes
        self.fc1 = nn.Linear(128 * 4 * 4, 256)
        self.relu6 = nn.ReLU()
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        r = self.bn4(self.conv4(self.relu3(self.bn3(self.conv3(x)))))
        x = self.relu4(x + r)
        x = self.pool3(x)
        x = self.relu5(self.bn5(self.conv5(x)))
        x = torch.flatten(x, 1)
        x = self.relu6(self.fc1(x))
        return self.fc2(x)


def make_model() -> nn.Module:
    return ShapesNet()
