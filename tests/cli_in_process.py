"""The command line run in this process (no Python start-up per call), exactly as `workbench` dispatches it."""


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of `workbench <argv>`."""
    from workbench import cli

    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
