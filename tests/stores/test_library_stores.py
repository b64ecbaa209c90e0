"""``oci://``, ``hf://datasets/...`` and ``dbfs:/Volumes/...`` through the libraries, up to where each stops.

None of the three can be pointed at a local server without faking one: OCI builds
``https://objectstorage.<region>.oraclecloud.com`` from its config, databricks-sdk talks to a
workspace, and there is no Hub server to run. What runs for real here: huggingface_hub reading
a dataset repository from its own cache offline (answer vocabulary and weights, through
``vlmo_composer.stores``), and each library refusing a missing or unusable configuration before
any request, which a conversion and ``train.py --dry-run`` report in one line (exit 2,
nothing written).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hub_cache import hub_cache, offline_cache
from test_store_errors import QUICKSTART, convert, one_line

from vlmo_composer import stores

HF_REPO = "vlmo-org/tiny-data"


@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    """No ``~/.oci/config`` nor ``~/.databrickscfg``; the test's folder is the working directory."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("OCI_CONFIG_FILE", "DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


def dry_run(argv: list[str], tmp_path: Path, capsys) -> tuple[int, str]:
    from vlmo_composer.training.train import main as train_main

    rc = train_main([QUICKSTART, "--dry-run", f"variables.data={tmp_path / 'data'}", *argv])
    return rc, capsys.readouterr().err


def convert_tars(url: str, tmp_path: Path, capsys) -> tuple[int, str]:
    """``convert_webdataset.py --tars URL`` (its listing of sizes is the first request)."""
    from data_prep.convert_webdataset import CONVERTER as WEB

    rc = WEB.cli(["--tars", url, "--out", str(tmp_path / "web_out"), "--no-progress"])
    assert not (tmp_path / "web_out").exists()
    return rc, capsys.readouterr().err


def test_oci_without_a_usable_config_fails_in_one_line(empty_home, tmp_path, monkeypatch, capsys):
    config = tmp_path / "oci" / "config"
    monkeypatch.setenv("OCI_CONFIG_FILE", str(config))
    one_line(*convert("oci://my-bucket/data", capsys), "oci://my-bucket/data", "no OCI config", str(config),
             "set OCI_CONFIG_FILE")
    one_line(*dry_run(["save_folder=oci://my-bucket/runs/{run_name}"], tmp_path, capsys), "save_folder",
             "oci://my-bucket/runs", "OCI_CONFIG_FILE")
    # A config the SDK refuses before any request (its key file is missing): named, with the file.
    config.parent.mkdir()
    config.write_text("[DEFAULT]\nuser=ocid1.user.oc1..a\nfingerprint=11:22:33:44:55:66:77:88:99:00:aa:bb:cc:dd:ee:ff"
                      f"\ntenancy=ocid1.tenancy.oc1..a\nregion=us-ashburn-1\nkey_file={tmp_path / 'oci' / 'key.pem'}\n")
    one_line(*convert("oci://my-bucket/data", capsys), "oci://my-bucket/data", "unusable OCI config",
             "InvalidKeyFilePath", "key.pem")
    one_line(*dry_run([f"eval_loaders.0.dataset.remote=oci://my-bucket/test"], tmp_path, capsys),
             "eval_loaders[0].dataset.remote", "unusable OCI config")
    one_line(*convert_tars("oci://my-bucket/web", tmp_path, capsys), "oci://my-bucket", "unusable OCI config")
    assert not any(Path.cwd().iterdir())  # nothing written, not even a staging folder here


def test_dbfs_volumes_without_the_sdk_or_credentials_fails_in_one_line(empty_home, tmp_path, capsys):
    url = "dbfs:/Volumes/main/vlmo/data/synthetic"
    if importlib.util.find_spec("databricks") is None or importlib.util.find_spec("databricks.sdk") is None:
        reason, dry_reason = "needs databricks-sdk (pip install 'databricks-sdk==0.58.0'", "databricks-sdk"
    else:
        reason, dry_reason = "no Databricks credentials", "no Databricks credentials"
    one_line(*convert(url, capsys), url, reason, "DATABRICKS_HOST")
    one_line(*dry_run([f"save_folder={url}/runs/{{run_name}}"], tmp_path, capsys), "save_folder", url, dry_reason)
    one_line(*convert_tars(f"{url}/web", tmp_path, capsys), f"{url}/web", reason)  # an input there
    with pytest.raises(ValueError, match=r"'dbfs:/tmp/x': write it as dbfs:/Volumes/CATALOG/SCHEMA/VOLUME/path"):
        stores.open_store("dbfs:/tmp/x")  # legacy DBFS paths: Composer's store takes Volumes only
    assert not any(Path.cwd().iterdir())


def test_hf_dataset_files_read_offline_from_the_hub_cache(tmp_path, monkeypatch, capsys):
    import torch
    from inference.inference_helpers import randomised, tiny_config

    from vlmo_composer import VLMo, VLMoInference
    from vlmo_composer.checkpoints.sources import build_model
    from vlmo_composer.tasks.vqa import load_answers

    cache = offline_cache(monkeypatch, tmp_path)
    repo = tmp_path / "repo"
    (repo / "vqa").mkdir(parents=True)
    answers = ["yes", "no", "two", "red"]
    (repo / "vqa" / "answer_vocab.json").write_text(json.dumps({"answers": answers}))
    tiny = randomised(VLMo(tiny_config()), seed=5)
    VLMoInference(tiny).export(repo / "weights" / "export")
    corpus = repo / "corpus" / "a.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("".join(json.dumps({"text": f"Line {i} of the corpus."}) + "\n" for i in range(9)))
    web_tars(repo / "web")
    hub_cache(cache, HF_REPO, repo, repo_type="dataset")

    root = f"hf://datasets/{HF_REPO}"
    assert load_answers(f"{root}/vqa/answer_vocab.json") == tuple(answers)
    store, key = stores.open_store(f"{root}/weights/export")
    assert (store.repo_id, key) == (HF_REPO, "weights/export")
    assert sorted(store.list("weights/export/")) == sorted(
        f"weights/export/{p.name}" for p in (repo / "weights" / "export").iterdir())
    loaded = build_model(f"{root}/weights/export")  # what eval.py --weights and init_from do with it
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in tiny.state_dict().items())
    # A converter's input there: the library moves whole files, so it is read from a per-process copy.
    from data_prep import convert_text

    argv = ["--unit", "line", "--range-size", "100", "--no-progress", "--num-workers", "1"]
    for name, item in (("text_local", str(corpus)), ("text_hf", f"{root}/corpus/a.jsonl")):
        (report,) = convert_text.main(["--inputs", item, *argv, "--out", str(tmp_path / name)])
        assert (report.groups, report.records) == (3, 3)
    shards = [[p.read_bytes() for p in sorted((tmp_path / name).rglob("*.mds*"))] for name in ("text_hf", "text_local")]
    assert len(shards[0]) == 3 and shards[0] == shards[1]
    # Web-pair tars there: planned from one listing of sizes and blob ids (the cache's blob names).
    from data_prep import convert_webdataset

    argv = ["--no-progress", "--num-workers", "1"]
    for name, item in (("web_local", str(repo / "web")), ("web_hf", f"{root}/web")):
        (report,) = convert_webdataset.main(["--tars", item, *argv, "--out", str(tmp_path / name)])
        assert (report.groups, report.records) == (2, 6)
    shards = [[p.read_bytes() for p in sorted((tmp_path / name).rglob("*.mds*"))] for name in ("web_hf", "web_local")]
    assert shards[0] and shards[0] == shards[1]
    assert [(i.key, i.size) for i in store.list_info("web/")] == [
        (f"web/{p.name}", p.stat().st_size) for p in sorted((repo / "web").iterdir())]

    with pytest.raises(FileNotFoundError, match=rf"{root}/vqa/missing.json"):
        stores.fetch(f"{root}/vqa/missing.json")
    # Writing needs the Hub: offline, a conversion stops in one line before anything is uploaded.
    one_line(*convert(f"{root}/out", capsys), f"{root}/out", "HF_HUB_OFFLINE is set", "HF_TOKEN")
    assert store.list("out/") == []
    # Training cannot read it offline: Streaming's downloader skips the cache (hf_hub_download(local_dir=...)).
    one_line(*dry_run([f"train_loader.dataset.remote={root}/image_text/train"], tmp_path, capsys),
             "train_loader.dataset.remote", f"{root}/image_text/train", "HF_HUB_OFFLINE is set")
    with pytest.raises(ValueError, match=r"write it as hf://datasets/ORG/NAME/path"):
        stores.open_store("hf://models/org/name/file")  # Streaming's hf:// is for dataset repositories


def web_tars(folder: Path) -> None:
    """Two webdataset tars of three JPEG/caption pairs each (img2dataset's ``{key}.jpg`` / ``{key}.txt``)."""
    import io
    import tarfile

    from PIL import Image

    folder.mkdir(parents=True)
    for shard in range(2):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for row in range(3):
                image = io.BytesIO()
                Image.new("RGB", (8, 8), (40 * row, 90 * shard, 30)).save(image, format="JPEG")
                key = f"{shard:05d}{row:04d}"
                for name, data in ((f"{key}.jpg", image.getvalue()), (f"{key}.txt", f"pair {key}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("url, kind", [("dbfs:/Volumes/a/b/c/x", "store"), ("s3://b/x", "store"),
                                       ("https://h/x", "https"), ("/local/x", "local")])
def test_every_path_check_tells_a_store_url_from_a_local_path(url, kind, empty_home, recwarn):
    """``dbfs:/Volumes/...`` has no ``//``: each check that branches on "a URL or a local path" must
    still see it as a store (never stat it as a local file), and keep ``https://`` weights a URL."""
    from vlmo_composer.callbacks.elastic import describe_resume
    from vlmo_composer.checkpoints.io import check_checkpoint_file
    from vlmo_composer.common.errors import ConfigError
    from vlmo_composer.common.run_paths import latest_checkpoint
    from vlmo_composer.evaluation.cli import describe_weights
    from vlmo_composer.training.config import check_object_store_paths, load_config
    from vlmo_composer.training.dry_run import check_checkpoint_to_load, describe_checkpoints
    from vlmo_composer.training.train import check_remote_resumption, drop_stale_autoresume_copy

    local, store = kind == "local", kind == "store"
    assert (stores.is_remote(url), stores.has_scheme(url)) == (store, not local)
    assert (check_checkpoint_to_load(url, "load_path", None, []) == []) == (not local)  # local: "does not exist"
    if local:
        with pytest.raises(ConfigError, match="checkpoint /local/x does not exist"):
            check_checkpoint_file(url, "load_path")
    else:
        check_checkpoint_file(url, "load_path")  # checked when downloaded
        assert describe_resume(url, {}).endswith("(remote: its world size is checked when the run starts)")
    assert describe_weights(url, "weights").endswith("(NOT FOUND yet)") == local
    if store:
        assert describe_weights(url, "weights") == f"weights {url}"
    dotted = {"train_loader": {"dataset": {"remote": f"{url}/../y"}}}
    if store:
        with pytest.raises(ConfigError, match=r"train_loader.dataset.remote: .* has a '.' or '..' segment"):
            check_object_store_paths(dotted)
    else:
        check_object_store_paths(dotted)  # a local path (or an https file) resolves '..' itself

    cfg = load_config(QUICKSTART, [f"save_folder={url}", "autoresume=true", "save_overwrite=false"])
    latest = latest_checkpoint(url, cfg.run_name)
    autoresume = next(line for line in describe_checkpoints(cfg) if line.startswith("autoresume:"))
    assert autoresume.endswith(f"{latest} when it exists" if not local else "(none yet: starts fresh)")
    check_remote_resumption(cfg)
    assert [str(w.message)[:44] for w in recwarn] == ["autoresume to an object store with save_over"] * store
    if not local:  # Composer's copy of a store's latest checkpoint, under the working directory
        Path(latest).parent.mkdir(parents=True)
        Path(latest).touch()
        drop_stale_autoresume_copy(cfg)
        assert Path(latest).exists() != store
