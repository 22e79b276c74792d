import pytest

from publisher.errors import SettingsError
from publisher.settings import RunSettings, validate_repo_id


@pytest.mark.parametrize("sparsity", [0.0, 1.0, -0.1, 1.5])
def test_sparsity_outside_open_interval_is_rejected(sparsity):
    with pytest.raises(SettingsError, match="strictly between 0 and 1"):
        RunSettings(model="org/m", sparsity=sparsity)


def test_default_repo_name_follows_the_study_convention():
    s = RunSettings(model="google/gemma-2-9b-it", sparsity=0.5)
    assert s.repo_name("alice") == "alice/gemma-2-9b-it-magnitude-s50"
    assert s.repo_name("alice", "pia") == "alice/gemma-2-9b-it-magnitude-s50-pia"
    assert (
        RunSettings(model="x.gguf", sparsity=0.1, base_model_id="Org/Small-LM").repo_name("u")
        == "u/small-lm-magnitude-s10"
    )


@pytest.mark.parametrize("bad", ["noslash", "a/b/c", "a/b--c", "a/-b", "a/b.git", "a/" + "x" * 97, "a/b c"])
def test_invalid_repo_ids_are_rejected(bad):
    with pytest.raises(SettingsError, match="not a valid Hub repo id"):
        validate_repo_id(bad)


def test_prune_key_changes_with_anything_that_changes_the_weights():
    base = RunSettings(model="org/m", sparsity=0.5)
    keys = {
        base.prune_key("hub:org/m@abc"),
        base.prune_key("hub:org/m@def"),
        RunSettings(model="org/m", sparsity=0.3).prune_key("hub:org/m@abc"),
        RunSettings(model="org/m", sparsity=0.5, tie_policy="threshold").prune_key("hub:org/m@abc"),
        RunSettings(model="org/m", sparsity=0.5, dtype="bfloat16").prune_key("hub:org/m@abc"),
    }
    assert len(keys) == 5
    assert base.prune_key("x") == RunSettings(model="org/m", sparsity=0.5, device="cuda").prune_key("x")


def test_structure_is_part_of_the_repo_name_and_calibration_file_edits_change_the_key(tmp_path):
    assert RunSettings(model="org/m", sparsity=0.5, structure="2:4").repo_name("u") == "u/m-magnitude-s50-2of4"
    calib = tmp_path / "c.jsonl"
    calib.write_text('{"text": "a"}\n')
    settings = RunSettings(model="org/m", sparsity=0.5, method="wanda", calibration_dataset=str(calib))
    before = settings.prune_key("x")
    calib.write_text('{"text": "b"}\n')
    assert settings.prune_key("x") != before


def test_a_calibration_revision_is_part_of_a_calibrated_run_and_refused_for_a_local_file(tmp_path):
    from publisher.run_folder import run_identity

    wanda = RunSettings(model="org/m", sparsity=0.5, method="wanda")
    pinned = RunSettings(model="org/m", sparsity=0.5, method="wanda", calibration_revision="abc123")
    assert wanda.prune_key("src") != pinned.prune_key("src") and run_identity(wanda) != run_identity(pinned)
    magnitude = RunSettings(model="org/m", sparsity=0.5)
    ignored = RunSettings(model="org/m", sparsity=0.5, calibration_revision="abc123", calibration_samples=9)
    assert magnitude.prune_key("src") == ignored.prune_key("src") and run_identity(magnitude) == run_identity(ignored)
    local = tmp_path / "calib.jsonl"
    local.write_text('{"text": "w1"}\n')
    with pytest.raises(SettingsError, match="local calibration file"):
        RunSettings(model="org/m", sparsity=0.5, method="wanda", calibration_dataset=str(local),
                    calibration_revision="main")
