#!/usr/bin/env bash
# Fetch the Multi30k task-1 raw corpus (en, de, fr, cs; train / val / test_2016_flickr) into data/multi30k/,
# the layout the multi30k configs expect. Needs internet. Usage: data/fetch_multi30k.sh [TARGET_DIR]
# The repository ships the English and French files (data/multi30k/README.md); files already there are kept.
set -euo pipefail
target=${1:-"$(dirname "$0")/multi30k"}
base=https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw
mkdir -p "$target"
for split in train val test_2016_flickr; do
    for lang in en de fr cs; do
        file="$split.$lang.gz"
        if [[ -s "$target/$file" ]]; then
            echo "have $target/$file"
            continue
        fi
        echo "fetching $file"
        curl -fsSL --retry 3 -o "$target/$file.partial" "$base/$file"
        mv "$target/$file.partial" "$target/$file"
    done
done
for split in train val test_2016_flickr; do
    printf '%-18s' "$split"; for lang in en fr; do printf ' %s=%s' "$lang" "$(zcat "$target/$split.$lang.gz" | wc -l)"; done; echo
done
