"""The one training skeleton that pretraining, fine-tuning and the downstream heads share.

- `optim`: AdamW parameter groups (no decay on norms, biases, embeddings) and the warm-up cosine
  schedule;
- `checkpoints`: the one checkpoint format (model, optimizer, scheduler, step, every process's RNG,
  the app's loadable model; written atomically) and resume;
- `metrics`: `metrics.jsonl` (one row per logged step, exact after resumes), the progress bar and the
  non-finite-loss stop (`TrainingDiverged`);
- `runtime`: the precision a trainer runs (egovlp.precision's vocabulary; bf16 on the CPU is
  autocast over fp32 master weights), accelerate setup, the run folder, the torchrun relaunch;
- `starting_point`: the EgoVLP model a run starts from (random, a timm ViT, a checkpoint).
"""

from egovlp.errors import TrainingDiverged
from egovlp.training.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINTS,
    MODEL_FOLDER,
    TRAINER_STATE,
    TRAINING_STATE,
    latest_checkpoint,
    load_checkpoint,
    read_trainer_state,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from egovlp.training.metrics import METRICS, MetricsLog, check_finite, progress_bar
from egovlp.training.optim import cosine_with_warmup, create_optimizer, parameter_groups, warmup_cosine_factor
from egovlp.training.runtime import (
    PrecisionName,
    check_num_processes,
    create_accelerator,
    is_main_rank,
    launched,
    prepare_optimization,
    prepare_output_dir,
    relaunch,
    run_and_report,
    training_precision,
)
from egovlp.training.starting_point import create_model_from_init, read_vit_state

__all__ = [
    "CHECKPOINTS",
    "CHECKPOINT_FORMAT",
    "METRICS",
    "MODEL_FOLDER",
    "TRAINER_STATE",
    "TRAINING_STATE",
    "MetricsLog",
    "PrecisionName",
    "TrainingDiverged",
    "check_finite",
    "check_num_processes",
    "cosine_with_warmup",
    "create_accelerator",
    "create_model_from_init",
    "create_optimizer",
    "is_main_rank",
    "latest_checkpoint",
    "launched",
    "load_checkpoint",
    "parameter_groups",
    "prepare_optimization",
    "prepare_output_dir",
    "progress_bar",
    "read_trainer_state",
    "read_vit_state",
    "relaunch",
    "resume_checkpoint",
    "rng_state",
    "run_and_report",
    "save_checkpoint",
    "set_rng_state",
    "training_precision",
    "warmup_cosine_factor",
]
