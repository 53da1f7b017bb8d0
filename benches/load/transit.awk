# INVITE transit through a system, from `tcpdump -n -tt` lines of INVITEs only (run.sh): those
# into the system (destination port p) and out of it (source port p), in capture order. The
# B2BUA changes every identifier, so each INVITE out is paired by time: with the oldest INVITE
# in still waiting, at most 2 ms before it. At the fixed rate's 5 ms spacing that pairs each
# call's two INVITEs, even when the capture missed one. Prints microseconds, one per pair.
{
  split($1, ts, ".")
  if (NR == 1) t0 = ts[1]
  t = (ts[1] - t0) * 1e6 + ts[2] # a double cannot hold epoch seconds to the microsecond
  split($3, src, "."); split($5, dst, "."); sub(":", "", dst[5])
  if (dst[5] == p) { q[tail++] = t; next }
  if (src[5] != p) next
  while (head < tail && t - q[head] > 2000) head++
  if (head < tail && t >= q[head]) printf "%d\n", t - q[head++]
}
