"""The fully connected network of Fig. 3a: three hidden layers of ``width`` units, each
followed by the dropout slot, then a linear classifier."""

from torch import nn

from .slots import linear_layer


class MLP(nn.Module):
    def __init__(self, in_features, *, width=256, num_classes=10, hidden_layers=3,
                 dropout="info", activation="relu", binary_p=0.5, max_alpha=0.7):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        layers, features = [nn.Flatten()], in_features
        for _ in range(hidden_layers):
            layers.append(linear_layer(features, width, activation=activation, dropout=dropout,
                                       binary_p=binary_p, max_alpha=max_alpha))
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
