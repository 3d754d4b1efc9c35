#!/bin/sh
# Starts Debian's Chromium with every `--disable-features=` flag merged into one.
# Chromium honours only the LAST such flag, and Playwright passes its own list, so a test that
# adds features to disable (WebRtcHideLocalIpsWithMdns, to keep WebRTC off the real network)
# would otherwise silently drop Playwright's. Set SIGNALBOX_CHROMIUM to use another binary.
features=
for arg do
  shift
  case $arg in
    --disable-features=*) features="${features:+$features,}${arg#--disable-features=}" ;;
    *) set -- "$@" "$arg" ;;
  esac
done
if [ -n "$features" ]; then set -- "$@" "--disable-features=$features"; fi
exec "${SIGNALBOX_CHROMIUM:-/usr/bin/chromium}" "$@"
