#!/bin/sh
# Vigil agent offline installer: does what the vigil-agent package does, for
# sensors without package repositories. Run as root from the unpacked bundle:
#
#   ./install.sh [--server HOST:PORT --token TOKEN --ca-pin sha256:HEX] [--no-start]
#   ./install.sh --uninstall [--purge]
#
# Installs the same files at the same paths as the package (the unit goes to
# /etc/systemd/system), creates the system user vigil and /var/lib/vigil,
# applies the sysctls (not in a chroot), enrolls when --server/--token/--ca-pin
# are given (as printed by `vigilctl token create`) and starts the service
# when systemd runs. Running a newer bundle's install.sh upgrades in place:
# state, enrollment and edited config files are kept (a changed default
# config lands next to yours as FILE.new). The new files are staged and the
# new binary is checked before anything is replaced, so a failed upgrade
# leaves the previous version in place and running.
# --uninstall removes the installed files (listed in
# /usr/lib/vigil/offline-install.list); --purge also deletes the agent's
# files in /etc/vigil (and the directory, once empty) and the state in
# /var/lib/vigil.
set -eu

STATE=/var/lib/vigil
LIST=/usr/lib/vigil/offline-install.list
CONFSUMS=/usr/lib/vigil/offline-install.conf.sha256
UNIT=vigil-agent.service
UNIT_DST=/etc/systemd/system/$UNIT
HERE=$(cd "$(dirname "$0")" && pwd)

say() { echo "vigil-agent: $*"; }
die() { echo "vigil-agent: $*" >&2; exit 1; }
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

systemd_running() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }
in_chroot() {
  if command -v ischroot >/dev/null 2>&1; then
    ischroot && return 0
    return 1
  fi
  [ "$(stat -Lc %d:%i / 2>/dev/null)" != "$(stat -Lc %d:%i /proc/1/root/. 2>/dev/null)" ]
}

mode=install purge=0 start=1 server="" token="" pin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --uninstall) mode=uninstall ;;
    --purge) purge=1 ;;
    --no-start) start=0 ;;
    --server) server="${2:?--server needs a value}"; shift ;;
    --server=*) server="${1#*=}" ;;
    --token) token="${2:?--token needs a value}"; shift ;;
    --token=*) token="${1#*=}" ;;
    --ca-pin) pin="${2:?--ca-pin needs a value}"; shift ;;
    --ca-pin=*) pin="${1#*=}" ;;
    vigil-agent|enroll) ;;  # pasted from `vigilctl token create`
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || die "run as root"
[ -z "${token:-}" ] && token="${VIGIL_ENROLL_TOKEN:-}"

uninstall() {
  if command -v systemctl >/dev/null 2>&1; then
    systemd_running && systemctl stop "$UNIT" >/dev/null 2>&1 || true
    systemctl disable "$UNIT" >/dev/null 2>&1 || true
  fi
  rm -f /etc/systemd/system/multi-user.target.wants/$UNIT
  if [ -f "$LIST" ]; then
    while IFS= read -r f; do
      case "$f" in /etc/vigil/*) [ "$purge" = 1 ] || continue ;; esac
      rm -f "$f" "$f.new"
    done <"$LIST"
    rm -f "$LIST"
  fi
  rm -f "$CONFSUMS"
  systemd_running && systemctl daemon-reload || true
  for d in /usr/lib/vigil/plugins /usr/lib/vigil/lib /usr/lib/vigil /usr/share/vigil/models /usr/share/vigil /usr/share/doc/vigil-agent; do
    rmdir "$d" 2>/dev/null || true
  done
  if [ "$purge" = 1 ]; then
    # The agent's config files went with the list above. Not rm -rf
    # /etc/vigil: the vigil-server package keeps its configuration there.
    rm -rf "$STATE"
    rmdir /etc/vigil 2>/dev/null || true
    say "uninstalled and purged (state, configuration)"
  else
    say "uninstalled (kept $STATE and /etc/vigil; --purge deletes them)"
  fi
}

if [ "$mode" = uninstall ]; then uninstall; exit 0; fi

# --- install / upgrade ---
if command -v dpkg-query >/dev/null 2>&1 && dpkg-query -W -f '${Status}' vigil-agent 2>/dev/null | grep -q 'ok installed'; then
  die "the vigil-agent package is installed; upgrade it with the package instead"
fi
if command -v rpm >/dev/null 2>&1 && rpm -q vigil-agent >/dev/null 2>&1; then
  die "the vigil-agent rpm is installed; upgrade it with the package instead"
fi
[ -f "$HERE/payload.sha256" ] || die "payload.sha256 missing: run install.sh from the unpacked bundle"
(cd "$HERE" && sha256sum -c --quiet --strict payload.sha256) || die "bundle is corrupt (payload.sha256 mismatch)"
"$HERE/usr/bin/vigil-agent" --version >/dev/null || die "the bundled vigil-agent does not run on this machine"
upgrade=0
[ -f "$LIST" ] && upgrade=1

# User and state directory.
nologin=/usr/sbin/nologin
[ -x $nologin ] || nologin=/sbin/nologin
if ! getent group vigil >/dev/null; then groupadd -r vigil; fi
if ! getent passwd vigil >/dev/null; then
  useradd -r -g vigil -d "$STATE" -M -s "$nologin" -c "Vigil agent" vigil
fi
install -d -m 0750 -o vigil -g vigil "$STATE"
# No recursive chown as root of a tree the vigil user writes (it could hold
# links); systemd re-owns the state directory (StateDirectory=).

# Stage every file next to its destination, then rename them all.
staged=""
# Scratch files in a private directory: names derived from a mktemp file
# (FILE.old) in /tmp could be created first by another user.
work=$(mktemp -d)
cleanup() { for f in $staged; do rm -f "$f.vigil-new"; done; rm -rf "$work"; }
trap cleanup EXIT
newlist=$work/list
newsums=$work/sums
: >"$newlist"
: >"$newsums"
unit_changed=0
for rel in $(cd "$HERE" && awk '{print $2}' payload.sha256 | sed 's#^\*##' | grep -E '^(usr|etc|systemd)/'); do
  src="$HERE/$rel"
  case "$rel" in
    systemd/*) dst="/etc/systemd/system/${rel#systemd/}" ;;
    *) dst="/$rel" ;;
  esac
  case "$rel" in
    usr/bin/*|usr/lib/vigil/plugins/*) m=0755 ;;
    *) m=0644 ;;
  esac
  install -d -m 0755 "$(dirname "$dst")"
  echo "$dst" >>"$newlist"
  case "$dst" in
    /etc/vigil/*)
      # Configuration, as dpkg treats conffiles: replaced when the admin left
      # the previous default untouched, else kept, with ours next to it.
      new=$(sha256sum <"$src" | cut -d' ' -f1)
      echo "$new  $dst" >>"$newsums"
      if [ -e "$dst" ]; then
        cur=$(sha256sum <"$dst" | cut -d' ' -f1)
        old=$(grep -F "  $dst" "$CONFSUMS" 2>/dev/null | cut -d' ' -f1 | head -n1)
        if [ "$cur" != "$new" ] && [ "$cur" != "$old" ]; then
          install -m "$m" -o root -g root "$src" "$dst.new"
          say "kept your edited $dst; the new default is $dst.new"
          continue
        fi
      fi
      ;;
  esac
  if [ "$dst" = "$UNIT_DST" ] && ! cmp -s "$src" "$dst" 2>/dev/null; then unit_changed=1; fi
  install -m "$m" -o root -g root "$src" "$dst.vigil-new"
  staged="$staged $dst"
done
for dst in $staged; do mv -f "$dst.vigil-new" "$dst"; done
staged=""
# Files of the previous version that this one no longer has.
if [ -f "$LIST" ]; then
  sort "$LIST" >"$newlist.old"; sort "$newlist" >"$newlist.sorted"
  comm -23 "$newlist.old" "$newlist.sorted" | grep -v '^/etc/vigil/' | while IFS= read -r f; do rm -f "$f"; done
  rm -f "$newlist.old" "$newlist.sorted"
fi
mv -f "$newlist" "$LIST"
mv -f "$newsums" "$CONFSUMS"
chmod 0644 "$LIST" "$CONFSUMS"

if ! in_chroot; then
  sysctl --system >/dev/null 2>&1 || say "could not apply /usr/lib/sysctl.d/60-vigil.conf now (it applies at boot)"
fi

enrolled_now=0
if [ -n "$server$token$pin" ]; then
  if [ -e "$STATE/identity.json" ]; then
    say "already enrolled ($STATE/identity.json); enrollment arguments ignored"
  else
    [ -n "$server" ] && [ -n "$token" ] && [ -n "$pin" ] || die "enrollment needs --server, --token and --ca-pin"
    VIGIL_ENROLL_TOKEN="$token" runuser -u vigil -- /usr/bin/vigil-agent enroll --server "$server" --ca-pin "$pin" --state "$STATE" \
      || die "enrollment failed (files are installed; enroll by hand: vigil-agent enroll ...)"
    enrolled_now=1
    command -v systemctl >/dev/null 2>&1 && systemctl enable "$UNIT" >/dev/null 2>&1 || true
  fi
fi

if systemd_running; then
  systemctl daemon-reload
  if [ -e "$STATE/identity.json" ] && [ "$start" = 1 ]; then
    if [ "$upgrade" = 1 ] && [ "$enrolled_now" = 0 ]; then
      # Restart only what was running; an agent enrolled just now (also
      # by an upgrade of an unenrolled one) is started below.
      systemctl try-restart "$UNIT"
    elif systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
      systemctl start "$UNIT"
    fi
  fi
fi
[ "$unit_changed" = 1 ] && [ "$upgrade" = 1 ] && say "unit file updated"
if [ -e "$STATE/identity.json" ]; then
  say "installed $(/usr/bin/vigil-agent --version 2>/dev/null | awk '{print $NF}') (enrolled)"
else
  say "installed, not enrolled: run the command from 'vigilctl token create' (or ./install.sh --server ... --token ... --ca-pin ...), then: systemctl enable --now $UNIT"
fi
