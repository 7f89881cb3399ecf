"""supercorrect: SuperCorrect (ICLR 2025) end to end, for small math LLMs.

Stage 1 (HSFT): a teacher turns reference solutions into hierarchical thought templates; the student is
fine-tuned on them. Stage 2 (Cross-DPO): the teacher finds the student's first wrong step and the student
learns to prefer the teacher's correction of that step over its own.
"""

__version__ = "0.1.0"
