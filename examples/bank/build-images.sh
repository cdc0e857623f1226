#!/usr/bin/env bash
# Builds the bank example's images (bank-server, bank-driver) into detvm's image store.
# detvm runs this on first use (`x-detvm.prepare`); running it again rebuilds.
exec "$(dirname "$0")/../build-example-images.sh" "$(dirname "$0")" bank-server bank-driver
