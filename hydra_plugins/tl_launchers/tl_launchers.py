"""tl's launchers: Hydra's joblib, Ray and submitit launcher plugins, each as tl runs it (the
logic is in `tl.sweeps.launchers`, and Ray's in `tl.sweeps.ray_jobs`). Hydra instantiates
launchers only from its `hydra_plugins` namespace, so they live here; tl's sweep callback puts
them in place of the plugin the user chose (`hydra/launcher=ray` and so on). Each plugin is an
optional extra: a launcher is defined only where its plugin is installed."""

from tl.sweeps import launchers, ray_jobs

try:
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import (
        JoblibLauncher as _Joblib,
    )
except ImportError:
    _Joblib = None
try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _Ray
except ImportError:
    _Ray = None
try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _submitit
except ImportError:
    _submitit = None

if _Joblib is not None:

    class JoblibLauncher(_Joblib):
        def launch(self, job_overrides, initial_job_idx):
            return launchers.joblib_launch(self, job_overrides, initial_job_idx)

if _Ray is not None:

    class RayLauncher(_Ray):
        def launch(self, job_overrides, initial_job_idx):
            return ray_jobs.launch(self, job_overrides, initial_job_idx)

if _submitit is not None:

    class SubmititLocalLauncher(_submitit.LocalLauncher):
        def launch(self, job_overrides, initial_job_idx):
            return launchers.submitit_launch(self, "local", job_overrides, initial_job_idx)

    class SubmititSlurmLauncher(_submitit.SlurmLauncher):
        def launch(self, job_overrides, initial_job_idx):
            return launchers.submitit_launch(self, "slurm", job_overrides, initial_job_idx)
