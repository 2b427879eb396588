#!/usr/bin/env bash
# The formatter config (.clang-format) is applied to every C source and
# header of the tree: prints TAP, one test point per file that is not.
set -uo pipefail
cd "${CBFS_SRCDIR:?}" || exit 1
command -v clang-format >/dev/null || {
	echo "1..0 # SKIP clang-format is missing (scripts/deps installs it)"
	exit 77
}
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	mapfile -t files < <(git ls-files '*.c' '*.h' | grep -v '^subprojects/')
else
	mapfile -t files < <(find . -path ./subprojects -prune -o -path './build*' -prune -o \
		-name '*.[ch]' -print | sort)
fi
n=0 bad=0
for f in "${files[@]}"; do
	n=$((n + 1))
	if out=$(clang-format --dry-run -Werror "$f" 2>&1); then
		echo "ok $n - $f is formatted"
	else
		bad=$((bad + 1))
		echo "not ok $n - $f is formatted (run: clang-format -i $f)"
		printf '%s\n' "$out" | head -n 6 | sed 's/^/# /'
	fi
done
echo "1..$n"
((bad == 0))
