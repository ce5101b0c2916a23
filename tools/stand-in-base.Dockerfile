# A stand-in for Prefect's base image (prefecthq/prefect:<version>-python3.11), for a
# machine that cannot pull it: Debian bookworm's Python 3.11 and the same Prefect,
# installed by pip as Prefect's image does. tools/docker_images.py builds it once from a
# debootstrap root (ROOTFS) and keeps it by tag; image/Dockerfile then builds on it
# (BASE_IMAGE) exactly as on the real one. It is never pushed: users' images are built
# on Prefect's own base by the image workflow.
ARG ROOTFS=flows-template-rootfs:bookworm
# hadolint ignore=DL3006
FROM ${ROOTFS}

ARG PREFECT_VERSION

# The machine's trust store, which may hold a TLS proxy's CA that PyPI is reached
# through. It lives here, in the stand-in only, so that images built on this base
# (their RUN steps inherit these variables) reach PyPI with no argument added to
# image/Dockerfile, and the image users build on Prefect's base is unchanged. The
# path is one that apt's update-ca-certificates never rewrites.
COPY ca-certificates.crt /usr/local/share/flows-template/ca-certificates.crt
ENV SSL_CERT_FILE=/usr/local/share/flows-template/ca-certificates.crt \
    PIP_CERT=/usr/local/share/flows-template/ca-certificates.crt \
    UV_NATIVE_TLS=true \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8

# `python` and `pip` on the PATH and a system site-packages pip may install into, as
# in Prefect's image (Debian marks its Python externally managed).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python-is-python3 \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED

RUN pip install --no-cache-dir "prefect==${PREFECT_VERSION}"

WORKDIR /opt/prefect
