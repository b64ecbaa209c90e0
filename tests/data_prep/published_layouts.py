"""Fixture builders that follow each dataset's *published* layout, and say where it comes from.

Sources (read with the search/fetch tools, not copied):

* img2dataset (github.com/rom1504/img2dataset, v1.47.0):
  - ``dataset_examples/cc3m.md``: Google's CC3M tsv is ``caption<TAB>url`` without a header; the
    recipe adds one in place with ``sed -i '1s/^/caption\\turl\\n/' cc3m.tsv`` before downloading
    (``cc12m.md`` adds ``url\\tcaption``);
  - ``downloader.py``: ``compute_key`` = ``10**ceil(log10(number_sample_per_shard)) * shard_id +
    row_in_shard``, zero-padded to that many digits plus ``oom_shard_count`` (5): with the default
    10000 rows per shard the key is the 0-based data row, ``000000123``; each sample's meta holds
    the input columns (``caption`` then ``url``, reader.py's ``column_list``), then ``key``,
    ``status`` (``success`` / ``failed_to_download`` / ``failed_to_resize``), ``error_message``,
    ``width``, ``height``, ``original_width``, ``original_height``;
  - ``writer.py``: the ``files`` format writes ``<shard>/<key>.jpg/.txt/.json`` for successes
    only, the ``webdataset`` format writes ``<shard>.tar`` with ``<key>.jpg/.txt/.json`` for
    successes only; both write every row's meta (failures included) to ``<shard>.parquet``;
  - ``logger.py`` ``write_stats``: ``<shard>_stats.json`` with ``count``, ``successes``,
    ``failed_to_download``, ``failed_to_resize``, ``status_dict`` (message -> count, "success"
    included), durations.
* SBU: ``sbu-captions-all.json`` ``{"image_urls", "captions", "user_ids"}`` (img2dataset's
  ``dataset_examples/SBUcaptions.md``, www.cs.rice.edu/~vo9/sbucaptions/); the 2011 release
  ``SBU_captioned_photo_dataset_urls.txt`` / ``..._captions.txt``, one url / caption per line in
  the same order (the page linked from the VLMo/ViLT data guides).
* NLVR2 (github.com/lil-lab/nlvr, ``nlvr2/README.md`` and ``nlvr2/data/*.json``): json lines with
  ``validation, sentence, left_url, writer, label ("True"/"False"), right_url, synset, query,
  identifier`` (``split-set_id-pair_id-sentence_id``), ``directory`` in train only,
  ``extra_validations`` in dev/test; ``test2.json`` added on 2022-08-18; images
  ``split-set_id-pair_id-img0.png``/``-img1.png``. The image zips unpack to ``images/train/<dir>/``,
  ``dev/``, ``test1/`` (ViLT ``DATA.md`` NLVR2 tree, which the VLMo guide follows).
* Visual Genome (visualgenome.org api v1.4 and the VLMo/ViLT guides): ``region_descriptions.json``
  ``[{"regions": [{region_id, width, height, image_id, phrase, y, x}], "id"}]``, images
  ``VG_100K/<id>.jpg`` and ``VG_100K_2/<id>.jpg``.
* VQA v2 (visualqa.org download page; github.com/GT-Vision-Lab/VQA README): zips unpack to flat
  ``v2_OpenEnded_mscoco_*_questions.json`` / ``v2_mscoco_*_annotations.json``; the repository
  keeps them under ``Questions/`` and ``Annotations/``.
"""

from __future__ import annotations

import io
import math
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from prep_helpers import write, write_json

SAMPLES_PER_SHARD = 10000  # img2dataset's default number_sample_per_shard


def img2dataset_key(row: int, shard: int = 0, per_shard: int = SAMPLES_PER_SHARD) -> str:
    """img2dataset's compute_key: the shard times 10**digits(per_shard) plus the row in it, padded."""
    digits = math.ceil(math.log10(per_shard))
    return f"{shard * 10 ** digits + row:0{digits + 5}d}"


@dataclass
class Download:
    """One input row as img2dataset saw it: the image it got, or the error it recorded."""

    caption: str
    url: str
    image: bytes | None = None
    status: str = "success"
    error_message: str | None = None


def img2dataset_meta(row: int, d: Download, width: int | None = 8, height: int | None = 8,
                     per_shard: int = SAMPLES_PER_SHARD) -> dict:
    ok = d.status == "success"
    key = img2dataset_key(row % per_shard, row // per_shard, per_shard)
    return {"caption": d.caption, "url": d.url, "key": key, "status": d.status,
            "error_message": d.error_message, "width": width if ok else None,
            "height": height if ok else None, "original_width": width if ok else None,
            "original_height": height if ok else None}


def _write_parquet_and_stats(root: Path, shard: str, metas: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ["caption", "url", "key", "status", "error_message", "width", "height",
               "original_width", "original_height"]
    pq.write_table(pa.table({c: [m[c] for m in metas] for c in columns}), root / f"{shard}.parquet")
    status_dict: dict[str, int] = {}
    for m in metas:
        message = "success" if m["status"] == "success" else m["error_message"]
        status_dict[message] = status_dict.get(message, 0) + 1
    write_json(root / f"{shard}_stats.json", {
        "count": len(metas), "successes": sum(m["status"] == "success" for m in metas),
        "failed_to_download": sum(m["status"] == "failed_to_download" for m in metas),
        "failed_to_resize": sum(m["status"] == "failed_to_resize" for m in metas),
        "duration": 1.0, "start_time": 0.0, "end_time": 1.0, "status_dict": status_dict})


def img2dataset_files_output(root: Path, downloads: list[Download], per_shard: int = SAMPLES_PER_SHARD) -> Path:
    """``--output_format files``: shard folders ``00000/``, ``00001/``, ... (``per_shard`` rows each) with
    successes, and each shard's ``00000.parquet`` and stats."""
    for start in range(0, len(downloads), per_shard):
        shard, metas = f"{start // per_shard:05d}", []
        for row in range(start, min(start + per_shard, len(downloads))):
            d = downloads[row]
            meta = img2dataset_meta(row, d, per_shard=per_shard)
            metas.append(meta)
            if d.status == "success":
                key = meta["key"]
                write(root / shard / f"{key}.jpg", d.image or b"")
                write(root / shard / f"{key}.txt", d.caption)
                write(root / shard / f"{key}.json", json.dumps(meta, indent=4))
        _write_parquet_and_stats(root, shard, metas)
    return root


def img2dataset_webdataset_output(root: Path, downloads: list[Download]) -> Path:
    """``--output_format webdataset``: ``00000.tar`` with successes only, ``00000.parquet``, stats."""
    root.mkdir(parents=True, exist_ok=True)
    metas = []
    with tarfile.open(root / "00000.tar", "w") as tar:
        for row, d in enumerate(downloads):
            meta = img2dataset_meta(row, d)
            metas.append(meta)
            if d.status != "success":
                continue
            for ext, data in (("jpg", d.image or b""), ("txt", d.caption.encode()),
                              ("json", json.dumps(meta, indent=4).encode())):
                info = tarfile.TarInfo(f"{meta['key']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    _write_parquet_and_stats(root, "00000", metas)
    return root


def cc3m_tsv(path: Path, rows: list[tuple[str, str]], recipe_header: bool) -> Path:
    """Google's ``caption<TAB>url`` tsv, optionally with the header img2dataset's recipe adds."""
    lines = (["caption\turl"] if recipe_header else []) + [f"{c}\t{u}" for c, u in rows]
    return write(path, "\n".join(lines) + "\n")


def nlvr2_line(identifier: str, sentence: str, label: str, directory: int | None = None) -> str:
    """One json line as in lil-lab/nlvr ``nlvr2/data/*.json`` (field order as published)."""
    obj: dict = {"validation": {"77": label}, "sentence": sentence,
                 "left_url": f"https://example.org/{identifier}/left.jpg", "writer": "103", "label": label,
                 "right_url": f"https://example.org/{identifier}/right.jpg", "synset": "beer bottle",
                 "query": "some beer bottles2", "identifier": identifier}
    if directory is None:
        obj["extra_validations"] = {"56": label, "43": label}
    else:
        obj["directory"] = directory
    return json.dumps(obj)


def cc3m_in_shards(root: Path, rows: int = 30, per_shard: int = 10) -> tuple[list[tuple[str, str]], list[bytes]]:
    """A CC tsv's rows downloaded by img2dataset into ``root`` in shard folders of ``per_shard`` keys:
    rows 4 and 25 failed (their parquets say so), 13's key holds another url, 17's file is lost
    (missing), 22 has a second file (ambiguous). The rows and each row's image."""
    from prep_helpers import image_bytes

    pairs = [(f"caption {i}", f"http://img.example/{i}/1.jpg") for i in range(rows)]
    images = [image_bytes(8, 8, i) for i in range(rows)]
    downloads = [Download(c, u, img) for (c, u), img in zip(pairs, images)]
    for row, message in ((4, "HTTP Error 404: Not Found"), (25, "timed out")):
        downloads[row] = Download(*pairs[row], status="failed_to_download", error_message=message)
    downloads[13].url = "http://img.example/other.jpg"
    img2dataset_files_output(root, downloads, per_shard)
    (root / f"{17 // per_shard:05d}" / f"{img2dataset_key(7, 1, per_shard)}.jpg").unlink()
    write(root / f"{22 // per_shard:05d}" / f"{img2dataset_key(2, 2, per_shard)}.png", images[22])
    return pairs, images
