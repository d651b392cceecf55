"""egovlp: egocentric video-language pretraining (EgoVLP) as a library.

    import egovlp
    model = egovlp.load_model("egovlp.pth")         # or a directory from save_pretrained / convert
    v = model.encode_video(frames)                  # [B, F, 3, 224, 224] -> [B, 256]
    t = model.encode_text(["#C C opens the fridge"])
"""

from egovlp.checkpoint import convert_checkpoint, load_model, save_pretrained
from egovlp.config import ModelConfig, TextTowerConfig, VideoTowerConfig, load_config
from egovlp.errors import CheckpointError, InputError, VideoReadError
from egovlp.model import EgoVLP

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "EgoVLP",
    "InputError",
    "ModelConfig",
    "TextTowerConfig",
    "VideoReadError",
    "VideoTowerConfig",
    "convert_checkpoint",
    "load_config",
    "load_model",
    "save_pretrained",
]


def create_model(config=None, device: str = "cpu") -> EgoVLP:
    """A randomly initialised model from a YAML path, a ModelConfig, or None (base architecture)."""
    cfg = config if isinstance(config, ModelConfig) else (load_config(config) if config else ModelConfig())
    return EgoVLP(cfg).to(device).eval()


__all__.append("create_model")
