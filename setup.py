"""Only the package list lives here; everything else is in pyproject.toml.

pyproject's `packages.find` cannot add packages whose folder sits elsewhere, and the named configs
stay in the top-level `configs/` (the repository layout names `configs/model/*.yaml`). So the list
is the discovered packages plus `egovlp.configs` and its kind folders, which pyproject's
`package-dir` maps onto `configs/`: a wheel carries the YAMLs at `egovlp/configs/<kind>/`, where
`egovlp.config.config_dirs` looks first.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

TOP_LEVEL = ["egovlp", "pretrain", "extract", "serve", "heads", "finetune"]

code_packages = find_namespace_packages(include=[p for name in TOP_LEVEL for p in (name, f"{name}.*")])
# each kind folder (model, pretrain, extract, heads) is a package too: setuptools warns about data
# folders that are not declared packages
config_packages = ["egovlp.configs"] + [
    f"egovlp.configs.{kind.name}"
    for kind in sorted(Path(__file__).parent.joinpath("configs").iterdir())
    if kind.is_dir()
]
setup(packages=code_packages + config_packages)
