"""The ground floor: the words every other floor shares, importing nothing of modelgate but `pipeline.errors`.

    result.py    Status, StageResult: what a stage returns
    verdict.py   Verdict and its exit codes (VERDICTS)
    rundir.py    RunDir: the files of one gate's run directory, named once
    gatekind.py  the gate kinds (release, advisory) and their tag
    secrets.py   the names of the secret environment variables every process redacts

A `Pin` is a shared word too, but it lives one floor up in `config/pin.py`: its fields are the release.yaml schema
(pydantic annotations), and this floor imports only the standard library.
"""
