"""Download a rule's remote inputs (data set, hull, dielectric data) with checksums."""
from pathlib import Path

from crystalrl.data.download import download
from crystalrl.io import get_logger


def main(snakemake):
    log = get_logger("download", snakemake.log[0])
    out = Path(snakemake.output[0])
    urls = snakemake.params.urls
    sha = snakemake.params.sha256 or {}
    if len(urls) == 1 and out.suffix:  # a single file
        targets = [(urls[0], out)]
    else:  # several files into a folder
        out.mkdir(parents=True, exist_ok=True)
        targets = [(u, out / u.rstrip("/").split("/")[-1]) for u in urls]
    for url, dest in targets:
        log.info("downloading %s -> %s", url, dest)
        download(url, dest, sha256=sha.get(dest.name))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
