#!/bin/sh
# Regenerates the voicemail prompts: 8 kHz mono raw G.711 µ-law, embedded by src/voicemail.rs.
# Needs espeak-ng and sox (apt-get install espeak-ng sox). Run from anywhere.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

say() {
    # -s 180: a bit faster than the default, so the greeting stays under 4 s.
    espeak-ng -v en -s 180 -w "$tmp/say.wav" "$2"
    # Trims the leading and trailing silence espeak-ng adds: the beep follows at once.
    sox "$tmp/say.wav" -r 8000 -c 1 -t ul "$1" silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse
}

say greeting.ul "The person you called is not available. Please leave a message after the tone."
say end.ul "No more messages."
