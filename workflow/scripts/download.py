"""Download a rule's remote inputs (data set, hull, dielectric data) with checksums."""
from pathlib import Path

from crystalrl.data.curate import fetch_inputs
from crystalrl.data.download import download
from crystalrl.io import get_logger


def main(snakemake):
    log = get_logger("download", snakemake.log[0])
    out = Path(snakemake.output[0])
    urls, sha = list(snakemake.params.urls), dict(snakemake.params.sha256 or {})
    if len(urls) == 1 and out.suffix:  # one file (hull, dielectric data)
        log.info("downloading %s -> %s", urls[0], out)
        download(urls[0], out, sha256=sha.get(out.name))
    else:  # several files into a folder (the data source)
        log.info("downloading %d files into %s", len(urls), out)
        fetch_inputs({"urls": urls, "path": str(out), "sha256": sha}, log)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
