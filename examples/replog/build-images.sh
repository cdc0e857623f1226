#!/usr/bin/env bash
# Builds the replog example's images (replog-server, replog-driver) into detvm's image
# store. detvm runs this on first use (`x-detvm.prepare`); running it again rebuilds.
exec "$(dirname "$0")/../build-example-images.sh" "$(dirname "$0")" replog-server replog-driver
