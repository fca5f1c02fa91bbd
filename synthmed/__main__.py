"""`python -m synthmed ...`, which is also how torchrun starts distributed training."""

from synthmed.cli import main

main()
