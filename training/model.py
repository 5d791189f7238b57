"""The Slicewise CNN-GRU: a small 2D CNN per slice, a bidirectional GRU over the slice sequence.

    slices [B, S, 3, H, W]
      -> SliceCNN (per slice)                 f [B, S, F]
      -> [f, f - f_prev, f - f_next] -> Linear -> ReLU       (neighbour differences, NoBrainer)
      -> 2-layer bidirectional GRU             h [B, S, 2*hidden]
      -> slice logits = cnn_head(f) + seq_head(h)            (residual on the CNN feature, SeuTao)
      -> study logits = study_head([max_s u, mean_s u]),  u = [h, f]
      -> divided by per-class temperatures (buffers, 1 while training; fitted on validation by
         ``training.calibration``), so every consumer, the ONNX graph included, sees calibrated logits
    returns (slice_logits [B, S, K], study_logits [B, K]); the export wrapper applies the sigmoid.

With ``use_gru=False`` (the ablation) slice logits are ``cnn_head(f)`` and the study head pools f.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class ModelConfig:
    in_channels: int = 3
    # stem (stride 2), then one stride-2 residual stage per further entry: 256 px -> 4 x 4 at the end
    widths: tuple[int, ...] = (16, 32, 48, 64, 96, 128)
    embed_dim: int = 128  # F, the per-slice embedding
    seq_dim: int = 128  # width after the neighbour-difference projection
    gru_hidden: int = 96
    gru_layers: int = 2
    dropout: float = 0.2
    num_classes: int = 6
    use_gru: bool = True
    input_size: int = 256  # recorded for export and preprocessing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        return cls(**d)


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Block(nn.Module):
    """Stride-2 conv, then a residual 3x3 conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = _conv_bn(cin, cout, 2)
        self.conv = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return self.act(x + self.conv(x))


class SliceCNN(nn.Module):
    """[N, C, H, W] -> [N, F]: stem, stride-2 residual stages, global average + max pooling."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.widths
        self.stem = nn.Sequential(_conv_bn(cfg.in_channels, w[0], 2), _conv_bn(w[0], w[0], 1))
        self.stages = nn.Sequential(*[_Block(a, b) for a, b in itertools.pairwise(w)])
        self.proj = nn.Sequential(nn.Linear(2 * w[-1], cfg.embed_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's maps [N, w[-1], h, w] -> the embedding [N, F]."""
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.proj(pooled)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[N, C, H, W] -> the stem's maps (1/2 resolution) and each stage's (1/4, 1/8, ...); the same
        operations as :meth:`forward`, so ``pool(feature_maps(x)[-1]) == forward(x)``."""
        maps = [self.stem(x)]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        return maps


class SequenceHead(nn.Module):
    """[B, S, F] embeddings -> (slice_logits [B, S, K], study_logits [B, K]), divided by the temperatures."""

    slice_temperature: torch.Tensor
    study_temperature: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.use_gru = cfg.use_gru
        f, k = cfg.embed_dim, cfg.num_classes
        self.drop = nn.Dropout(cfg.dropout)
        self.cnn_head = nn.Linear(f, k)
        pooled_dim = f
        if cfg.use_gru:
            self.mix = nn.Sequential(nn.Linear(3 * f, cfg.seq_dim), nn.ReLU(inplace=True))
            self.gru = nn.GRU(
                cfg.seq_dim,
                cfg.gru_hidden,
                num_layers=cfg.gru_layers,
                batch_first=True,
                bidirectional=True,
                dropout=cfg.dropout if cfg.gru_layers > 1 else 0.0,
            )
            self.seq_head = nn.Linear(2 * cfg.gru_hidden, k)
            nn.init.zeros_(self.seq_head.weight)  # start from the CNN-only solution
            nn.init.zeros_(self.seq_head.bias)
            pooled_dim = f + 2 * cfg.gru_hidden
        self.study_head = nn.Linear(2 * pooled_dim, k)
        self.register_buffer("slice_temperature", torch.ones(k))
        self.register_buffer("study_temperature", torch.ones(k))

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slice_logits = self.cnn_head(self.drop(f))
        u = f
        if self.use_gru:
            f_prev = torch.cat([f[:, :1], f[:, :-1]], dim=1)  # edge slices see themselves: diff 0
            f_next = torch.cat([f[:, 1:], f[:, -1:]], dim=1)
            z = self.mix(torch.cat([f, f - f_prev, f - f_next], dim=2))
            h, _ = self.gru(self.drop(z))
            slice_logits = slice_logits + self.seq_head(self.drop(h))
            u = torch.cat([h, f], dim=2)
        pooled = torch.cat([u.amax(dim=1), u.mean(dim=1)], dim=1)
        study_logits = self.study_head(self.drop(pooled))
        return slice_logits / self.slice_temperature, study_logits / self.study_temperature


class ICHNet(nn.Module):
    """The whole model: ``forward(slices [B, S, C, H, W]) -> (slice_logits, study_logits)``."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        self.cfg = cfg
        self.cnn = SliceCNN(cfg)
        self.head = SequenceHead(cfg)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, C, H, W] -> [B, S, F]."""
        b, s = x.shape[0], x.shape[1]
        return self.cnn(x.flatten(0, 1)).view(b, s, -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.embed(x))


class ExportWrapper(nn.Module):
    """What goes into the .onnx: logits -> probabilities."""

    def __init__(self, net: ICHNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, slices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slice_logits, study_logits = self.net(slices)
        return torch.sigmoid(slice_logits), torch.sigmoid(study_logits)


def build_model(cfg: ModelConfig) -> ICHNet:
    return ICHNet(cfg)
