"""Recipes: a method as a unit (torchtune's recipe registry is the model).

A recipe names the stages it runs, in order, and the run-config sections it reads. `base.py` declares the
`Recipe` type, one module per method declares its recipe(s), and `registry.py` lists them; a run config picks one
with `recipe:` (default `supercorrect`). Adding a method = one module here, its stages under `stages/`, one line
in each registry.
"""
