# Sourced by the scripts (install-deps.sh, test.sh, render-manifests.sh, e2e/run.sh): the
# directory install-deps.sh puts the command-line tools it downloads into (helm), first on
# PATH. `$SIGHTLINE_TOOLS_DIR` moves it; by default it sits beside libchdb.
SIGHTLINE_TOOLS_DIR="${SIGHTLINE_TOOLS_DIR:-${SIGHTLINE_LIB_DIR:-/usr/local/lib/sightline}/bin}"
export SIGHTLINE_TOOLS_DIR
case ":$PATH:" in
  *":$SIGHTLINE_TOOLS_DIR:"*) ;;
  *) export PATH="$SIGHTLINE_TOOLS_DIR:$PATH" ;;
esac
