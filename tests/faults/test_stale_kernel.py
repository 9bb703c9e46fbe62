"""A partial or stale kernel is labelled everywhere, and a stale one is not analysed unasked."""

from __future__ import annotations

import json

from losskernel_dist.cli import main as cli_main
from losskernel_dist.config import config_from_dict
from losskernel_dist.jobs.sample import sample
from losskernel_dist.rundir import RunDir

from ..dist_helpers import run_config, write_yaml


def test_partial_then_stale_then_fresh(tmp_path, capsys):
    run = tmp_path / "run"
    data = run_config(run, chains=2)
    write_yaml(tmp_path / "c.yaml", data)
    sample(config_from_dict(data), chains=[0], progress=False)
    assert cli_main(["reduce", str(run), "--allow-partial", "--no-progress"]) == 0
    capsys.readouterr()
    assert cli_main(["info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kernel_state"] == {"reduced": True, "draws_used": 12, "draws_usable": 12,
                                    "partial": True, "stale": False}
    assert cli_main(["analyze", str(run)]) == 0
    metrics = json.loads(RunDir(run).metrics_file.read_text())
    assert metrics["run"]["kernel_state"]["partial"] is True
    assert "Partial kernel" in RunDir(run).report_file.read_text()

    sample(config_from_dict(data), progress=False)  # the other chain: the kernel is stale now
    capsys.readouterr()
    assert cli_main(["info", str(run)]) == 0
    assert "STALE: reduced from 12 draws, but 24 draws are usable now" in capsys.readouterr().out
    assert cli_main(["analyze", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stale" in err[0] and "--allow-stale" in err[0], err
    assert cli_main(["analyze", str(run), "--allow-stale"]) == 0
    assert "Stale kernel" in RunDir(run).report_file.read_text()

    assert cli_main(["reduce", str(run), "--no-progress"]) == 0
    assert not RunDir(run).metrics_file.exists()  # the old kernel's analysis is gone
    capsys.readouterr()
    assert cli_main(["info", str(run), "--json"]) == 0
    state = json.loads(capsys.readouterr().out)["kernel_state"]
    assert state == {"reduced": True, "draws_used": 24, "draws_usable": 24, "partial": False,
                     "stale": False}
