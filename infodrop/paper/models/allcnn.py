"""All-CNN-32 and All-CNN-96 of the paper's Table 2 (Springenberg et al.'s All-CNN with batch
norm before each activation).  Each "3x3 conv stride 2 + dropout" pair is one slot layer
(see noise.py); ``width`` scales every filter count but the 10 class maps ("% of filters" in
Fig. 3b, 5, 6)."""

from torch import nn

from .slots import conv_layer

# (kernel, filters, stride, followed by the dropout slot) for each conv of Table 2.
ALL_CNN_32 = [
    (3, 96, 1, False), (3, 96, 1, False), (3, 96, 2, True),
    (3, 192, 1, False), (3, 192, 1, False), (3, 192, 2, True),
    (3, 192, 1, False), (1, 192, 1, False),
]
ALL_CNN_96 = [
    (3, 32, 1, False), (3, 32, 1, False), (3, 32, 2, True),
    (3, 64, 1, False), (3, 64, 1, False), (3, 64, 2, True),
    (3, 96, 1, False), (3, 96, 1, False), (3, 96, 2, True),
    (3, 192, 1, False), (3, 192, 1, False), (3, 192, 2, True),
    (3, 192, 1, False), (1, 192, 1, False),
]


class AllCNN(nn.Module):
    """features (the convs of ``layout``) -> 1x1 conv to the classes + BN + activation ->
    spatial average -> logits (softmax is in the loss)."""

    def __init__(self, layout, *, in_channels=1, num_classes=10, width=1.0, dropout="info",
                 activation="relu", binary_p=0.5, max_alpha=0.7):
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        layers, channels = [], in_channels
        for kernel, filters, stride, has_slot in layout:
            out = max(1, round(filters * width))
            layers.append(conv_layer(channels, out, kernel, stride, activation=activation,
                                     dropout=dropout if has_slot else "none",
                                     binary_p=binary_p, max_alpha=max_alpha))
            channels = out
        # Table 2 ends with "1x1 conv 10 ReLU": the class maps get BN and the activation too.
        layers.append(conv_layer(channels, num_classes, 1, activation=activation))
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))


def all_cnn_32(**kwargs):
    """Table 2(a), for 32x32 inputs; its two dropout slots run at 16x16 and 8x8."""
    return AllCNN(ALL_CNN_32, **kwargs)


def all_cnn_96(**kwargs):
    """Table 2(b), for 96x96 inputs (Cluttered MNIST); slots at 48x48, 24x24, 12x12, 6x6."""
    return AllCNN(ALL_CNN_96, **kwargs)
