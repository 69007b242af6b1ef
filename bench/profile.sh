#!/usr/bin/env bash
# Profiles Switchyard's (or due's, or the floor's) gate and node under one benchmark cell with perf: the
# work is bench/profiling.py's (its --help and docstring tell the options and what it writes).
#
# usage: bench/profile.sh [--systems S] [--cells TRANSPORT/CLIENT/CONNS@LETTERS,...] [--secs N] ...
# needs: perf (Debian: linux-perf), and the programs bench/run.py builds
exec python3 "$(dirname "$0")/profiling.py" "$@"
