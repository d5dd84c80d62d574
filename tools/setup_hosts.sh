#!/usr/bin/env bash
# Enable the host test tiers from the ComfyUI source snapshots in ../shared/hosts/ (no fetching):
# extract each archive OUTSIDE the repository and build one venv per host (tools/setup_host_venv.sh).
# Usage: tools/setup_hosts.sh [CACHE_DIR]      (default: ${XDG_CACHE_HOME:-~/.cache}/vista-hosts)
# Idempotent: a host or venv whose stamp matches its archive / requirements is reused.
# Prints, per host, a line "VERSION COMFYUI_PATH PYTHON" (stdout); progress goes to stderr.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
shared=${VISTA_SHARED:-$repo/../shared}
cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/vista-hosts}
case "$(cd "$(dirname "$cache")" 2>/dev/null && pwd)/" in "$repo"/*) echo "cache $cache is inside the repo: never extract ComfyUI there" >&2; exit 2;; esac
shopt -s nullglob
archives=("$shared"/hosts/comfyui-*.tar.gz)
[ ${#archives[@]} -gt 0 ] || { echo "no ComfyUI archives in $shared/hosts" >&2; exit 3; }
mkdir -p "$cache"
lines=(); pids=()
for archive in "${archives[@]}"; do
  version=$(basename "$archive" .tar.gz); version=${version#comfyui-}
  host="$cache/hosts/$version/comfyui-$version"
  venv="$cache/venvs/$version"
  sum=$(sha256sum "$archive" | cut -c1-16)
  if [ "$(cat "$cache/hosts/$version/.stamp" 2>/dev/null)" != "$sum" ]; then
    echo "extracting $archive -> $cache/hosts/$version" >&2
    rm -rf "$cache/hosts/$version" && mkdir -p "$cache/hosts/$version"
    tar -xzf "$archive" -C "$cache/hosts/$version"
    [ -f "$host/main.py" ] || { echo "$archive did not extract to $host" >&2; exit 1; }
    echo "$sum" > "$cache/hosts/$version/.stamp"
  fi
  want=$(cat "$host/requirements.txt" "$repo/requirements.txt" "$repo/tests/requirements.txt" "$repo/tools/setup_host_venv.sh" | sha256sum | cut -c1-16)
  if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$want" ]; then
    echo "building venv for ComfyUI $version -> $venv (log: $venv.log)" >&2
    rm -rf "$venv"; mkdir -p "$(dirname "$venv")"
    # venv builds are mostly downloads and unpacking: build the hosts' venvs in parallel
    ( bash "$repo/tools/setup_host_venv.sh" "$venv" "$host" > "$venv.log" 2>&1 && echo "$want" > "$venv/.stamp" ) &
    pids+=("$!:$version")
  fi
  lines+=("$version $host $venv/bin/python")
done
for job in "${pids[@]}"; do
  if ! wait "${job%%:*}"; then
    echo "venv build for ComfyUI ${job#*:} failed; last lines of its log:" >&2
    tail -n 30 "$cache/venvs/${job#*:}.log" >&2
    exit 1
  fi
done
printf '%s\n' "${lines[@]}"
