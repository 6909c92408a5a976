"""`python -m hyperrec.pipeline.cli ...`: the `hyperrec` command."""
from hyperrec.pipeline.cli import main

if __name__ == "__main__":
    main()
