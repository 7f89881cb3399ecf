"""Problems: where a run's problem sets come from.

`spec.py` is the `data:` block of a run config (`DataSpec`); `loaders.py` reads GSM8K / MATH files, their hub
fallback and Hugging Face datasets into `Problem`s; `synthetic.py` generates arithmetic word problems from the
wording in `scenarios.yaml`. The loaders' entry points are re-exported here.
"""

from .loaders import LoadReport, load_optional, load_problems, load_problems_with_report
from .spec import DataSpec
from .synthetic import generate_synthetic

__all__ = ["DataSpec", "LoadReport", "generate_synthetic", "load_optional", "load_problems", "load_problems_with_report"]
