#!/usr/bin/env bash
# Builds the Debian package from the release sbcd and checks what is in it: files, modes,
# conffiles, maintainer scripts, the unit file (systemd-analyze verify when available) and the
# shipped configuration (sbcd --check-config from the package itself).
set -euo pipefail
cd "$(dirname "$0")/.."
# Stripped; the debug symbols go into a separate -dbgsym package next to it.
cargo deb -p sbc-core --no-build --dbgsym --quiet >/dev/null
deb=$(ls -t target/debian/sbcd_*.deb | head -n1)
echo "package: $deb"
list=$(dpkg-deb -c "$deb" | awk '{print $1, $6}')
need=(
  "-rwxr-xr-x ./usr/bin/sbcd"
  "-rw-r--r-- ./usr/lib/systemd/system/sbcd.service"
  "-rw-r----- ./etc/sbc/sbc.yaml"
  "-rw-r----- ./etc/sbc/admin.env"
  "-rw-r--r-- ./etc/sbc/profiles/symmetricrtp.sbcprofile.conf"
  "-rw-r--r-- ./etc/sbc/profiles/sst_b2b.sbcprofile.conf"
  "-rw-r--r-- ./usr/share/doc/sbcd/examples/regcache/sbc.conf"
  "-rw-r--r-- ./etc/logrotate.d/sbcd"
  "-rw-r--r-- ./usr/lib/sbc/sems-sbc-common.sh"
  "-rw-r--r-- ./usr/share/sbc/grafana/sbcd.json"
  "-rw-r--r-- ./usr/share/doc/sbcd/README.md"
  "-rw-r--r-- ./usr/share/doc/sbcd/docs/manual/configuration.md"
  "-rw-r--r-- ./usr/share/doc/sbcd/docs/ARCHITECTURE.md"
)
for t in get-activeprofile get-regex-map-names list-profiles load-callcontrol-modules load-profile \
         reload-profile reload-profiles set-activeprofile set-regex-map teardown-call; do
  need+=("-rwxr-xr-x ./usr/bin/sems-sbc-$t")
done
for f in "${need[@]}"; do
  grep -qxF -- "$f" <<<"$list" || { echo "missing from the package: $f"; exit 1; }
done
info=$(dpkg-deb -I "$deb")
for f in conffiles postinst postrm prerm; do
  grep -q " $f" <<<"$info" || { echo "no $f in the package"; exit 1; }
done
dpkg-deb -f "$deb" Depends | grep -q jq || { echo "Depends lacks jq"; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
grep -qxF /etc/sbc/sbc.yaml <(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles) || { echo "sbc.yaml is not a conffile"; exit 1; }
# The shipped configuration, with the token file the postinst would create.
echo test-token > "$root/etc/sbc/admin.token"
sed "s|/etc/sbc/admin.token|$root/etc/sbc/admin.token|" "$root/etc/sbc/sbc.yaml" > "$root/sbc-check.yaml"
"$root/usr/bin/sbcd" --config "$root/sbc-check.yaml" --check-config
grep -q 'admin.token' "$root/usr/lib/sbc/sems-sbc-common.sh"
jq -e '.panels | length > 10' "$root/usr/share/sbc/grafana/sbcd.json" >/dev/null
# Every page the shipped documents link to is shipped too (links to source files are not).
doc=$root/usr/share/doc/sbcd
while IFS=: read -r page target; do
  [ -f "$(dirname "$page")/$target" ] || { echo "${page#"$doc"/} links to $target, not in the package"; exit 1; }
done < <(grep -roE '\]\([^):#]+\.md' --include='*.md' "$doc" | sed 's/\](/ /; s/:/ /' | awk '{print $1 ":" $2}')
grep -q 'usr/share/doc/sbcd/docs/manual/configuration.md' "$root/etc/sbc/sbc.yaml" \
  || { echo "sbc.yaml does not point at the shipped manual"; exit 1; }
if command -v systemd-analyze >/dev/null; then
  # Verify the unit as shipped, with ExecStart pointing at the extracted binary.
  sed "s|/usr/bin/sbcd|$root/usr/bin/sbcd|g" "$root/usr/lib/systemd/system/sbcd.service" > "$root/sbcd.service"
  systemd-analyze verify "$root/sbcd.service"
  echo "unit: systemd-analyze verify OK; $(systemd-analyze security --offline=yes "$root/sbcd.service" 2>/dev/null | tail -n1)"
fi
echo "package OK"
