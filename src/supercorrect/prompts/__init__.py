"""The method's prompts, one text file each (paper, arXiv 2410.09008 v3, Appendix A, plus our own few).

`render(name, **fields)` fills `{placeholders}`; literal braces in a prompt file are doubled (`{{}}`).
"""

from functools import cache
from importlib.resources import files

NAMES = (
    "ht",  # student, training and evaluation (hierarchical thought prompt)
    "cot",  # plain chain-of-thought baseline
    "template_extraction",  # teacher: reference solution -> hierarchical solution
    "correction_grounded",  # teacher: find and correct the first wrong step, given the reference solution
    "correction_plain",  # student: the same without the reference solution
    "step_verify",  # teacher, ELAD CLAER variant: verify one step at a time
    "inspector",  # second checker: repair a teacher trace whose answer is wrong
    "judge",  # optional LLM judge of a model's final answer (evaluate.judge, judge.py)
    "lema_triplet",  # LEMA: student input of a correction triplet (the LEMA correction prompt's instruction)
    "lema_continue",  # LEMA, LLM teacher: continue a solution from its corrected step to the answer
    "teacher_solve",  # explain-based distillation, solve-based variant: template_extraction without the solution
    "claer_continue",  # teacher, ELAD CLAER: the correct continuation from the first wrong step
    "reer_draft",  # student, REER: the draft thinking trajectory z
)


@cache
def load(name: str) -> str:
    if name not in NAMES:
        raise KeyError(f"unknown prompt {name!r}; known: {', '.join(NAMES)}")
    return files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8").strip()


def render(name: str, **fields: str) -> str:
    return load(name).format(**fields)
