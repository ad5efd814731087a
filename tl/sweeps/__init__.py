"""A multirun (`tl-train -m ...`): one MLflow parent run with a child per job (`sweep`), Hydra's
launcher plugins as tl runs them (`launchers`: joblib, Ray, submitit), and stopping every job
the sweep started (`stopping`). Importing it registers `${tl.unique:}` (`outdirs`)."""

from tl.sweeps import outdirs

outdirs.register()
