#!/usr/bin/env bash
# install.sh: install elf-tools into a prefix: the five tools, their man pages and shell
# completions, and the ELF scripts; with --query-py, the agents' query.py into the ELF home.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: ./install.sh [--prefix DIR] [--bin-dir DIR] [--static] [--query-py]

Installs, creating every folder it needs:
  PREFIX/bin/elf-{lock,write,db,commit,backoff}         the tools
  PREFIX/share/man/man1/elf-*.1                          their man pages
  PREFIX/share/bash-completion/completions/elf-*         bash completions (named after the tool)
  PREFIX/share/zsh/site-functions/_elf-*                 zsh completions
  PREFIX/share/fish/vendor_completions.d/elf-*.fish      fish completions
  PREFIX/share/elf-tools/scripts/                        the ELF scripts, their lib/, query.py
  PREFIX/bin/{record-failure,...,query-py}.sh            links to the scripts

Options:
  --prefix DIR    where to install (default /usr/local)
  --bin-dir DIR   install the tools already built in DIR (such as target/release) instead of
                  building them with `cargo install --locked`
  --static        build static, non-relocatable binaries (about 0.5 ms faster per call)
  --query-py      also install query.py as ELF_HOME/query/query.py (ELF_HOME defaults to
                  ~/.claude/emergent-learning), with query-py.sh linked beside it
  -h, --help      this help
Exit: 0 installed; 64 bad usage; other: the status of the step that failed (named on stderr).
USAGE
}

die() {
    printf 'install.sh: %s\n' "$1" >&2
    exit "${2:-1}"
}

prefix=/usr/local bin_dir='' static=0 query_py=0
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a folder" 64; prefix=$2; shift ;;
        --prefix=*) prefix=${1#*=} ;;
        --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a folder" 64; bin_dir=$2; shift ;;
        --bin-dir=*) bin_dir=${1#*=} ;;
        --static) static=1 ;;
        --query-py) query_py=1 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" 64 ;;
    esac
    shift
done
[ -n "$prefix" ] || die "--prefix is empty" 64

src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools=(elf-lock elf-write elf-db elf-commit elf-backoff)
scripts=(record-failure.sh record-heuristic.sh start-experiment.sh sync-db-markdown.sh query.sh query-py.sh)

# The tools.
if [ -n "$bin_dir" ]; then
    for t in "${tools[@]}"; do
        [ -x "$bin_dir/$t" ] || die "$bin_dir/$t: not found (build first, or leave out --bin-dir)" 66
        install -D -m 0755 "$bin_dir/$t" "$prefix/bin/$t"
    done
else
    command -v cargo >/dev/null || die "cargo not found: install Rust (rustup or your distribution's cargo), or give --bin-dir" 69
    build=(cargo install --locked --force --no-track --path "$src" --root "$prefix")
    if [ "$static" = 1 ]; then
        host=$(rustc -vV | sed -n 's/^host: //p')
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
            "${build[@]}" --target "$host"
    else
        "${build[@]}"
    fi
fi

# Man pages and completions.
for t in "${tools[@]}"; do
    install -D -m 0644 "$src/man/$t.1" "$prefix/share/man/man1/$t.1"
    install -D -m 0644 "$src/completions/$t.bash" "$prefix/share/bash-completion/completions/$t"
    install -D -m 0644 "$src/completions/_$t" "$prefix/share/zsh/site-functions/_$t"
    install -D -m 0644 "$src/completions/$t.fish" "$prefix/share/fish/vendor_completions.d/$t.fish"
done

# The ELF scripts: real files with their lib/ beside them, linked from bin/ (a script follows
# its link to find lib/).
dest=$prefix/share/elf-tools/scripts
for s in "${scripts[@]}" query.py; do
    install -D -m 0755 "$src/bin-wrappers/$s" "$dest/$s"
done
for f in "$src"/bin-wrappers/lib/*; do
    install -D -m 0644 "$f" "$dest/lib/${f##*/}"
done
for s in "${scripts[@]}"; do
    ln -sfn "../share/elf-tools/scripts/$s" "$prefix/bin/$s"
done

# query.py in the ELF home, where agents call it.
if [ "$query_py" = 1 ]; then
    home=${ELF_HOME:-${HOME:?HOME is not set}/.claude/emergent-learning}
    install -D -m 0755 "$src/bin-wrappers/query.py" "$home/query/query.py"
    case $dest in
        /*) target=$dest ;;
        *) target=$PWD/$dest ;;
    esac
    ln -sfn "$target/query-py.sh" "$home/query/query-py.sh"
fi

echo "installed elf-tools into $prefix"
