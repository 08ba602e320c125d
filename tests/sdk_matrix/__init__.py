"""The E2B SDK version matrix: old, middle and pinned SDK releases, each in its own venv or
npm prefix installed from a committed lock, run through `up` by a small scenario script.

`releases.py` is the matrix, `installing.py` builds and caches the environments (also
`make sdk-matrix`), `locking.py` rewrites the locks, `scenarios/` holds what each release
runs, and `test_sdk_matrix.py` checks the JSON line each scenario prints.
"""
