"""`python -m sweeper` is `mlp-sweep`."""
from sweeper.app import main

if __name__ == "__main__":
    main()
