"""A Cloud Storage bucket on localhost for the tests of ``gs://`` workdirs: gcp-storage-emulator
(an in-memory server of the JSON API), with the one header it leaves out and TensorStore (how
Orbax writes a checkpoint's arrays) needs: an object's generation on download.

Run as ``python fake_gcs.py PORT BUCKET``; :func:`bucket_env` says how a process reaches it
(gcsfs for etils.epath, TensorStore's GCS driver).
"""

import sys


def bucket_env(port: int) -> dict[str, str]:
    """Environment variables that send a process's ``gs://`` reads and writes to the server."""
    url = f"http://127.0.0.1:{port}"
    return {
        "EPATH_USE_TF": "false",  # etils.epath through fsspec's gcsfs, which follows the next
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_CLOUD_PROJECT": "vjax-tests",
    }


def _serve(port: int, bucket: str) -> None:
    from gcp_storage_emulator.handlers import objects

    download = objects.download

    def download_with_generation(request, response, storage, *args, **kwargs):
        try:
            params = request.params
            found = storage.get_file_obj(params["bucket_name"], params["object_id"])
            response["x-goog-generation"] = found["generation"]
            response["x-goog-metageneration"] = found["metageneration"]
        except Exception:  # noqa: BLE001 (a missing object: the emulator's own 404 follows)
            pass
        return download(request, response, storage, *args, **kwargs)

    objects.download = download_with_generation  # before the server's routes are built
    from gcp_storage_emulator.__main__ import main

    sys.exit(main(["start", "--host=127.0.0.1", f"--port={port}", "--in-memory",
                   f"--default-bucket={bucket}"]))  # fmt: skip


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2])
