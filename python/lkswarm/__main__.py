import os
import sys

if len(sys.argv) == 3 and sys.argv[1] == "worker":
    # A child of `lkswarm run --workers N` (`lkswarm.app.workers` starts it so): its job file says
    # everything, so it skips the command line's modules (typer and the commands' own): about 40 ms of
    # CPU less in every worker (bench/bench_startup.py). `lkswarm worker JOB` runs the same job.
    from pathlib import Path

    from lkswarm.app.worker_job import run_worker_job

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_worker_job(Path(sys.argv[2])))

from lkswarm.cli.commands import main

main()
