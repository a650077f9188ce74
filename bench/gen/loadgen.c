// loadgen — a compiled MQTT 3.1.1 load generator for the message-throughput scenarios.
//
// Why: the Node generator pays a JS callback per 'data' event, and Mosquitto writes every
// PUBLISH as its own TCP segment, so against Mosquitto the Node generator saturated its
// core and the broker numbers were generator-bound. This tool is single-threaded, uses
// epoll, reads in large chunks with a streaming frame parser, and makes at most one
// write() per socket per loop turn, so it needs a fraction of a core for the same load.
//
// Build: gcc -O2 -Wall -Wextra -o loadgen bench/gen/loadgen.c   (Linux, C11, libc only)
//
// Usage:
//   loadgen --port P [--sub-port P2] --scenario pairs|fanout|fanin --qos 0|1|2
//           --pubs N --subs M --inflight W --size 64 --duration-ms D --warmup-ms X
//           [--rate MSG_PER_S (0 = unbounded)] [--topic PREFIX] [--max-msgs N]
//           [--setup-timeout-ms 30000] [--keepalive 600] [--turn-us 0] [--no-bind]
//           [--sub-v5-alias N] [--pub-persistent]
//   --qos 2: publishers run PUBLISH → PUBREC → PUBREL → PUBCOMP, subscribers answer PUBREC to
//   each delivery and PUBCOMP to the broker's PUBREL.
//   --pub-persistent: publishers connect with Clean Session 0 (a persistent session; in a
//   Vigil cluster a QoS 2 publish from one is stored in Redis before it is routed), under
//   client ids bench-pub-<pid>-<i> so no run resumes another's session.
//   --sub-v5-alias N: subscribers connect with MQTT 5 and Topic Alias Maximum N (0: none),
//   so a broker may send them topic aliases; publishers stay 3.1.1. The result's
//   rxPublishBytes counts the PUBLISH bytes subscribers received in the window.
//   --turn-us N: at most one loop turn per N µs (default 0: eager, refill on every turn like
//   the Node generator). Larger reads and writes, fewer syscalls; see bench/README.md.
//
// Topic layout (the same as bench/lib/scenarios.mjs):
//   pairs : publisher i → PREFIX/i, subscriber i on PREFIX/i (tracks publisher i); pubs == subs
//   fanout: every publisher → PREFIX, every subscriber on PREFIX (subscriber 0 tracks all)
//   fanin : publisher i → PREFIX/i, every subscriber on PREFIX/+ (subscriber 0 tracks all)
// Default PREFIX: pairs bench/q0, bench/q1 or bench/q2 (by QoS), fanout bench/fanout, fanin bench/fanin.
// Client ids bench-pub-<i> / bench-sub-<i>; sockets bind to 127.0.0.<2 + i % 253> like the
// Node generator (publishers use i + 1000). Only 127.0.0.1 is accepted as the broker address.
//
// Window ("--inflight"): QoS 0 = messages sent but not yet seen by the tracking subscriber
// (a watchdog declares them lost after 100 ms without progress, counted as "stalls");
// QoS 1 = PUBLISHes not yet acknowledged by PUBACK; QoS 2 = not yet completed by PUBCOMP. Publishers refill their window once per
// loop turn, after every read of that turn has been processed.
//
// Payload (--size bytes, ≥ 16): [0..8) send time, CLOCK_MONOTONIC ns (big endian),
// [8..12) sequence, [12..16) publisher index. Latency = receive time − send time, recorded
// in a log-linear histogram (32 sub-buckets per power of two, ≤ 3.2 % bucket width).
//
// Output on stdout: {"event":"go"} when every client is connected and subscribed and the
// run starts (warm-up begins), then, 200 ms after the window (clients linger, reading but not
// publishing, then DISCONNECT), one JSON result line: sent, sentInWindow, received (deliveries
// in the window), acked, stalls, p50Us/p99Us, ackP50Us/ackP99Us (QoS 1/2: PUBLISH sent → PUBACK,
// or → PUBCOMP, for publishes sent in the window), cpuUs/wallUs (getrusage over the window), errors. Exit 0 on a completed run, 1 on a
// setup failure (the JSON line then has "ok":false and "error"), 2 on bad arguments.
// Everything is bounded: setup timeout, warm-up + duration, a message cap, and alarm() as a
// last resort.
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_CLIENTS 20000
#define MAX_FRAME (1u << 20)          // largest inbound frame we accept
#define SCRATCH_BYTES (MAX_FRAME + (512u << 10))
#define MAX_OUT_BYTES (64u << 20)     // per-connection pending output cap
#define READS_PER_EVENT 8
#define MAX_EVENTS 512
#define WATCHDOG_NS 100000000LL

// ------------------------------------------------------------------------------------------
// Time, histogram

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000LL + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

// Log-linear: values < 64 ns exact; above, 32 linear sub-buckets per power of two.
#define H_SUB_BITS 5
#define H_SUB (1 << H_SUB_BITS)
#define H_MAX_EXP 40                  // 2^40 ns ≈ 18 min
#define H_BUCKETS ((H_MAX_EXP - H_SUB_BITS + 1) * H_SUB)
typedef struct {
  uint64_t b[H_BUCKETS];
  uint64_t total;
} hist_t;
static hist_t lat_hist;  // delivery (or CONNACK in the connect storm): receive time − send time
static hist_t ack_hist;  // QoS 1/2 publisher: PUBACK / PUBCOMP time − send time

static inline void hist_record(hist_t *h, int64_t v) {
  if (v < 0) v = 0;
  uint64_t u = (uint64_t)v;
  unsigned idx;
  if (u < 2 * H_SUB) {
    idx = (unsigned)u;
  } else {
    unsigned e = 63u - (unsigned)__builtin_clzll(u);
    if (e >= H_MAX_EXP) {
      idx = H_BUCKETS - 1;
    } else {
      unsigned shift = e - H_SUB_BITS;
      idx = shift * H_SUB + (unsigned)(u >> shift);
    }
  }
  h->b[idx]++;
  h->total++;
}

/** Midpoint of the bucket holding quantile q, in µs; -1 when empty. */
static double hist_quantile_us(const hist_t *h, double q) {
  if (h->total == 0) return -1;
  uint64_t target = (uint64_t)(q * (double)h->total + 0.999999);
  if (target < 1) target = 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < H_BUCKETS; i++) {
    seen += h->b[i];
    if (seen >= target) {
      if (i < 2 * H_SUB) return i / 1000.0;
      unsigned shift = i / H_SUB - 1;
      uint64_t m = (i % H_SUB) + H_SUB;
      double lower = (double)(m << shift);
      double width = (double)(1ull << shift);
      return (lower + width / 2) / 1000.0;
    }
  }
  return -1;
}

// ------------------------------------------------------------------------------------------
// Buffers

typedef struct {
  uint8_t *p;
  size_t off, len, cap;  // unsent bytes are p[off..len)
} obuf_t;

static int obuf_reserve(obuf_t *b, size_t extra) {
  if (b->off > 0 && b->off == b->len) b->off = b->len = 0;
  if (b->len + extra <= b->cap) return 0;
  if (b->off > 0) {  // compact first
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
    if (b->len + extra <= b->cap) return 0;
  }
  size_t need = b->len + extra;
  if (need > MAX_OUT_BYTES) return -1;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < need) cap *= 2;
  uint8_t *np = realloc(b->p, cap);
  if (!np) return -1;
  b->p = np;
  b->cap = cap;
  return 0;
}

// ------------------------------------------------------------------------------------------
// State

enum { ST_CONNECTING, ST_WAIT_CONNACK, ST_WAIT_SUBACK, ST_READY, ST_CLOSED };
enum { SC_PAIRS, SC_FANOUT, SC_FANIN, SC_CONNECT };

struct flow;

typedef struct conn {
  int fd;
  int is_pub;
  int index;
  int state;
  int port;
  obuf_t out;
  int out_dirty;     // queued for this turn's flush
  int want_out;      // EPOLLOUT registered
  uint8_t *pend;     // partial inbound frame carried to the next read
  size_t pend_len, pend_cap;
  struct flow *flow; // publisher
  int track;         // subscriber: -1 none, -2 every flow, else that flow index
  char topic[256];   // publisher topic or subscriber filter
} conn_t;

typedef struct flow {
  conn_t *c;
  int index;
  uint8_t *tmpl;
  size_t tlen, payload_off, id_off;
  int64_t sent, last_seq, inflight, progress_mark;
  uint16_t next_id;
  uint8_t *outstanding;  // QoS 1/2: bitmap of packet ids not yet acknowledged / completed
  int64_t *sent_at;      // QoS 1/2: send time by packet id (0: outside the window)
  int dirty;
} flow_t;

static struct {
  int port, sub_port, scenario, qos, pubs, subs, inflight, size, keepalive, bind_src;
  int sub_v5_alias;  // -1: subscribers speak 3.1.1; else MQTT 5 with this Topic Alias Maximum
  int pub_persistent;  // publishers connect with Clean Session 0
  int64_t duration_ms, warmup_ms, setup_timeout_ms, rate, max_msgs, turn_us;
  char topic[200];
} cfg = {
  .port = 0, .sub_port = 0, .scenario = SC_PAIRS, .qos = 0, .pubs = 8, .subs = 8, .inflight = 64,
  .size = 64, .keepalive = 600, .bind_src = 1, .sub_v5_alias = -1, .duration_ms = 3000, .warmup_ms = 1000,
  .setup_timeout_ms = 30000, .rate = 0, .max_msgs = 1000000000LL,
};

static int ep = -1;
static conn_t *conns;
static int nconns;
static flow_t *flows;
static int nflows;
static uint8_t *scratch;

static conn_t **out_list;  // connections with output queued this turn
static int out_count;
static flow_t **dirty_flows;
static int dirty_count;

static int running;        // publishers may send
static int ready_count;
static int64_t t_go, t_measure_start, t_measure_end;
static int64_t cpu_at_start = -1, cpu_at_end = -1, wall_at_start, wall_at_end;
static int64_t cpu_at_launch, wall_at_launch;

static int64_t st_sent, st_sent_in_window, st_received, st_received_total, st_acked, st_stalls;
static int64_t st_rx_publish_bytes;  // PUBLISH frames received in the window, header included
static int64_t st_errors, st_unexpected, st_foreign, st_total_sent_cap_hit;
static double rate_tokens;
static int64_t rate_last_ns;
static char first_error[512];

static void note_error(const char *fmt, ...) {
  st_errors++;
  if (first_error[0]) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(first_error, sizeof first_error, fmt, ap);
  va_end(ap);
}

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

static void emit_result(int ok) {
  int64_t now = now_ns();
  double cpu_win = (cpu_at_start >= 0 && cpu_at_end >= 0) ? (double)(cpu_at_end - cpu_at_start) : 0;
  double wall_win = (cpu_at_start >= 0 && cpu_at_end >= 0) ? (double)(wall_at_end - wall_at_start) / 1000.0 : 0;
  double p50 = hist_quantile_us(&lat_hist, 0.5), p99 = hist_quantile_us(&lat_hist, 0.99);
  double ack50 = hist_quantile_us(&ack_hist, 0.5), ack99 = hist_quantile_us(&ack_hist, 0.99);
  FILE *f = stdout;
  fprintf(f, "{\"ok\":%s,\"sent\":%lld,\"sentInWindow\":%lld,\"received\":%lld,\"receivedTotal\":%lld,"
             "\"acked\":%lld,\"stalls\":%lld,\"latencyCount\":%llu,\"rxPublishBytes\":%lld,",
          ok ? "true" : "false", (long long)st_sent, (long long)st_sent_in_window, (long long)st_received,
          (long long)st_received_total, (long long)st_acked, (long long)st_stalls, (unsigned long long)lat_hist.total,
          (long long)st_rx_publish_bytes);
  if (p50 >= 0) fprintf(f, "\"p50Us\":%.1f,\"p99Us\":%.1f,", p50, p99);
  else fprintf(f, "\"p50Us\":null,\"p99Us\":null,");
  if (ack50 >= 0) fprintf(f, "\"ackP50Us\":%.1f,\"ackP99Us\":%.1f,", ack50, ack99);
  else fprintf(f, "\"ackP50Us\":null,\"ackP99Us\":null,");
  fprintf(f, "\"cpuUs\":%.0f,\"wallUs\":%.0f,\"totalCpuUs\":%lld,\"totalWallUs\":%lld,\"measureUs\":%lld,"
             "\"errors\":%lld,\"unexpected\":%lld,\"foreign\":%lld,\"capped\":%s,\"error\":",
          cpu_win, wall_win, (long long)(cpu_us() - cpu_at_launch), (long long)((now - wall_at_launch) / 1000),
          (long long)(cfg.duration_ms * 1000), (long long)st_errors, (long long)st_unexpected, (long long)st_foreign,
          st_total_sent_cap_hit ? "true" : "false");
  json_str(f, first_error);
  fprintf(f, "}\n");
  fflush(f);
}

static void fatal(const char *fmt, ...) {
  st_errors++;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(first_error, sizeof first_error, fmt, ap);
  va_end(ap);
  emit_result(0);
  exit(1);
}

// ------------------------------------------------------------------------------------------
// Output

static void mark_out(conn_t *c) {
  if (!c->out_dirty) {
    c->out_dirty = 1;
    out_list[out_count++] = c;
  }
}

static uint8_t *out_reserve(conn_t *c, size_t n) {
  if (obuf_reserve(&c->out, n) != 0) {
    note_error("%s %d: output buffer over %u bytes", c->is_pub ? "publisher" : "subscriber", c->index, MAX_OUT_BYTES);
    return NULL;
  }
  uint8_t *at = c->out.p + c->out.len;
  c->out.len += n;
  mark_out(c);
  return at;
}

static void set_epoll(conn_t *c, int want_out) {
  if (c->state == ST_CLOSED || c->want_out == want_out) return;
  struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c };
  if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == 0) c->want_out = want_out;
}

static void close_conn(conn_t *c, const char *why) {
  if (c->state == ST_CLOSED) return;
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->state = ST_CLOSED;
  if (t_go == 0) fatal("%s %d: %s during setup", c->is_pub ? "publisher" : "subscriber", c->index, why);
  if (running) note_error("%s %d closed by the broker (%s)", c->is_pub ? "publisher" : "subscriber", c->index, why);
}

/** One write per connection per turn; leftovers wait for EPOLLOUT. */
static void flush_conn(conn_t *c) {
  if (c->state == ST_CLOSED || c->state == ST_CONNECTING) return;
  size_t left = c->out.len - c->out.off;
  if (left == 0) {
    set_epoll(c, 0);
    return;
  }
  ssize_t n = send(c->fd, c->out.p + c->out.off, left, MSG_NOSIGNAL);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      set_epoll(c, 1);
      return;
    }
    close_conn(c, strerror(errno));
    return;
  }
  c->out.off += (size_t)n;
  if (c->out.off == c->out.len) {
    c->out.off = c->out.len = 0;
    set_epoll(c, 0);
  } else {
    set_epoll(c, 1);
  }
}

static void flush_all(void) {
  for (int i = 0; i < out_count; i++) {
    conn_t *c = out_list[i];
    c->out_dirty = 0;
    flush_conn(c);
  }
  out_count = 0;
}

// ------------------------------------------------------------------------------------------
// MQTT encoding

static size_t put_varint(uint8_t *p, size_t v) {
  size_t n = 0;
  do {
    uint8_t b = v % 128;
    v /= 128;
    if (v) b |= 0x80;
    p[n++] = b;
  } while (v && n < 4);
  return n;
}

static size_t put_str(uint8_t *p, const char *s) {
  size_t l = strlen(s);
  p[0] = (uint8_t)(l >> 8);
  p[1] = (uint8_t)l;
  memcpy(p + 2, s, l);
  return l + 2;
}

static inline void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}
static inline void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}
static inline uint32_t get_u32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void queue_connect(conn_t *c) {
  char id[64];
  if (c->is_pub && cfg.pub_persistent) snprintf(id, sizeof id, "bench-pub-%d-%d", (int)getpid(), c->index);
  else snprintf(id, sizeof id, "bench-%s-%d", c->is_pub ? "pub" : "sub", c->index);
  uint8_t body[128];
  size_t n = 0;
  int v5 = !c->is_pub && cfg.sub_v5_alias >= 0;
  n += put_str(body + n, "MQTT");
  body[n++] = v5 ? 5 : 4;  // protocol level 5.0 / 3.1.1
  body[n++] = c->is_pub && cfg.pub_persistent ? 0x00 : 0x02;  // clean session (or a persistent one)
  body[n++] = (uint8_t)(cfg.keepalive >> 8);
  body[n++] = (uint8_t)cfg.keepalive;
  if (v5 && cfg.sub_v5_alias > 0) {
    body[n++] = 3;     // property length
    body[n++] = 0x22;  // Topic Alias Maximum
    body[n++] = (uint8_t)(cfg.sub_v5_alias >> 8);
    body[n++] = (uint8_t)cfg.sub_v5_alias;
  } else if (v5) {
    body[n++] = 0;     // no properties
  }
  n += put_str(body + n, id);
  uint8_t *p = out_reserve(c, 1 + 4 + n);
  if (!p) return;
  size_t h = 0;
  p[h++] = 0x10;
  h += put_varint(p + h, n);
  memcpy(p + h, body, n);
  c->out.len -= (1 + 4 + n) - (h + n);
}

static void queue_subscribe(conn_t *c) {
  int v5 = cfg.sub_v5_alias >= 0;
  size_t tl = strlen(c->topic);
  size_t rl = 2 + (v5 ? 1 : 0) + 2 + tl + 1;
  uint8_t *p = out_reserve(c, 1 + 4 + rl);
  if (!p) return;
  size_t h = 0;
  p[h++] = 0x82;
  h += put_varint(p + h, rl);
  p[h++] = 0;
  p[h++] = 1;  // packet id 1
  if (v5) p[h++] = 0;  // no properties
  h += put_str(p + h, c->topic);
  p[h++] = (uint8_t)cfg.qos;
  c->out.len -= (1 + 4 + rl) - h;
}

static void build_template(flow_t *f) {
  size_t tl = strlen(f->c->topic);
  size_t rl = 2 + tl + (cfg.qos ? 2 : 0) + (size_t)cfg.size;
  f->tmpl = calloc(1, 5 + rl);
  if (!f->tmpl) fatal("out of memory");
  size_t h = 0;
  f->tmpl[h++] = (uint8_t)(0x30 | (cfg.qos << 1));
  h += put_varint(f->tmpl + h, rl);
  h += put_str(f->tmpl + h, f->c->topic);
  if (cfg.qos) {
    f->id_off = h;
    h += 2;
  }
  f->payload_off = h;
  put_u32(f->tmpl + h + 12, (uint32_t)f->index);
  h += (size_t)cfg.size;
  f->tlen = h;
}

// ------------------------------------------------------------------------------------------
// Publishing

static void mark_flow(flow_t *f) {
  if (!f->dirty) {
    f->dirty = 1;
    dirty_flows[dirty_count++] = f;
  }
}

static void pump(flow_t *f, int64_t now) {
  if (!running || f->c->state != ST_READY) return;
  int64_t outstanding = cfg.qos == 0 ? f->sent - (f->last_seq + 1) : f->inflight;
  int64_t room = cfg.inflight - outstanding;
  if (room <= 0) return;
  if (cfg.rate > 0) {
    if (rate_tokens < 1) return;
    if (room > (int64_t)rate_tokens) room = (int64_t)rate_tokens;
  }
  if (st_sent + room > cfg.max_msgs) {
    room = cfg.max_msgs - st_sent;
    st_total_sent_cap_hit = 1;
    if (room <= 0) return;
  }
  uint8_t *p = out_reserve(f->c, (size_t)room * f->tlen);
  if (!p) return;
  for (int64_t i = 0; i < room; i++) {
    uint8_t *m = p + (size_t)i * f->tlen;
    memcpy(m, f->tmpl, f->tlen);
    put_u64(m + f->payload_off, (uint64_t)now);
    put_u32(m + f->payload_off + 8, (uint32_t)(f->sent + i));
    if (cfg.qos) {
      // Skip ids still unacknowledged (cannot happen with a window < 65535, but be safe).
      for (int k = 0; k < 65535; k++) {
        f->next_id = f->next_id == 65535 ? 1 : f->next_id + 1;
        if (!(f->outstanding[f->next_id >> 3] & (1u << (f->next_id & 7)))) break;
      }
      f->outstanding[f->next_id >> 3] |= (uint8_t)(1u << (f->next_id & 7));
      m[f->id_off] = (uint8_t)(f->next_id >> 8);
      m[f->id_off + 1] = (uint8_t)f->next_id;
      f->sent_at[f->next_id] = now >= t_measure_start && now < t_measure_end ? now : 0;
    }
  }
  f->sent += room;
  st_sent += room;
  if (cfg.qos) f->inflight += room;
  if (cfg.rate > 0) rate_tokens -= (double)room;
  if (now >= t_measure_start && now < t_measure_end) st_sent_in_window += room;
}

// ------------------------------------------------------------------------------------------
// Receiving

static void on_ready(conn_t *c) {
  c->state = ST_READY;
  ready_count++;
}

static void handle_publish(conn_t *c, uint8_t first, const uint8_t *p, size_t rl, int64_t now) {
  int qos = (first >> 1) & 3;
  if (rl < 2) { st_unexpected++; return; }
  size_t tl = ((size_t)p[0] << 8) | p[1];
  size_t q = 2 + tl;
  uint16_t id = 0;
  if (qos > 0) {
    if (q + 2 > rl) { st_unexpected++; return; }
    id = (uint16_t)((p[q] << 8) | p[q + 1]);
    q += 2;
    // QoS 1: PUBACK; QoS 2: PUBREC now, PUBCOMP when the broker's PUBREL comes
    uint8_t *a = out_reserve(c, 4);
    if (a) { a[0] = qos == 1 ? 0x40 : 0x50; a[1] = 2; a[2] = (uint8_t)(id >> 8); a[3] = (uint8_t)id; }
  }
  if (!c->is_pub && cfg.sub_v5_alias >= 0) {
    // MQTT 5: skip the properties (a Topic Alias among them; the payload names the flow)
    size_t plen = 0, mul = 1;
    int done = 0;
    for (int i = 0; i < 4 && q < rl; i++) {
      uint8_t x = p[q++];
      plen += (size_t)(x & 0x7f) * mul;
      mul *= 128;
      if (!(x & 0x80)) { done = 1; break; }
    }
    if (!done) { st_unexpected++; return; }
    q += plen;
  }
  if (q > rl || rl - q < 16) { st_foreign++; return; }
  const uint8_t *pl = p + q;
  int64_t ts = (int64_t)get_u64(pl);
  uint32_t seq = get_u32(pl + 8);
  uint32_t idx = get_u32(pl + 12);
  st_received_total++;
  if (now >= t_measure_start && now < t_measure_end) {
    st_received++;
    hist_record(&lat_hist, now - ts);
  }
  if (c->track == -1 || idx >= (uint32_t)nflows) return;
  if (c->track >= 0 && (uint32_t)c->track != idx) return;
  flow_t *f = &flows[idx];
  if ((int64_t)seq > f->last_seq) f->last_seq = seq;
  mark_flow(f);
}

/** Parses every complete frame in b[0..len); returns the bytes consumed. */
static size_t parse_frames(conn_t *c, const uint8_t *b, size_t len, int64_t now) {
  size_t pos = 0;
  while (pos + 2 <= len) {
    size_t rl = 0, mul = 1, p = pos + 1;
    int complete = 0;
    for (int i = 0; i < 4 && p < len; i++) {
      uint8_t x = b[p++];
      rl += (size_t)(x & 0x7f) * mul;
      mul *= 128;
      if (!(x & 0x80)) { complete = 1; break; }
    }
    if (!complete) {
      if (p - pos >= 5) { close_conn(c, "malformed remaining length"); return len; }
      break;
    }
    if (rl > MAX_FRAME) { close_conn(c, "frame too large"); return len; }
    if (p + rl > len) break;
    uint8_t first = b[pos];
    const uint8_t *body = b + p;
    switch (first >> 4) {
      case 3:  // PUBLISH
        if (now >= t_measure_start && now < t_measure_end) st_rx_publish_bytes += (int64_t)(p - pos + rl);
        handle_publish(c, first, body, rl, now);
        break;
      case 4:    // PUBACK (QoS 1 done)
      case 7: {  // PUBCOMP (QoS 2 done)
        if (rl < 2 || !c->flow || (first >> 4) != (cfg.qos == 1 ? 4 : 7)) { st_unexpected++; break; }
        flow_t *f = c->flow;
        uint16_t id = (uint16_t)((body[0] << 8) | body[1]);
        if (f->outstanding && (f->outstanding[id >> 3] & (1u << (id & 7)))) {
          f->outstanding[id >> 3] &= (uint8_t)~(1u << (id & 7));
          f->inflight--;
          st_acked++;
          if (f->sent_at[id]) hist_record(&ack_hist, now - f->sent_at[id]);
          mark_flow(f);
        } else {
          st_unexpected++;
        }
        break;
      }
      case 5: {  // PUBREC: release it (the id stays in flight until PUBCOMP)
        if (rl < 2 || !c->flow || cfg.qos != 2) { st_unexpected++; break; }
        uint16_t id = (uint16_t)((body[0] << 8) | body[1]);
        if (rl >= 3 && body[2] >= 0x80) { note_error("PUBREC reason 0x%02x", body[2]); break; }
        uint8_t *a = out_reserve(c, 4);
        if (a) { a[0] = 0x62; a[1] = 2; a[2] = (uint8_t)(id >> 8); a[3] = (uint8_t)id; }
        break;
      }
      case 6: {  // PUBREL to a subscriber: complete it
        if (rl < 2 || c->is_pub) { st_unexpected++; break; }
        uint8_t *a = out_reserve(c, 4);
        if (a) { a[0] = 0x70; a[1] = 2; a[2] = body[0]; a[3] = body[1]; }
        break;
      }
      case 2:  // CONNACK
        if (c->state != ST_WAIT_CONNACK || rl < 2) { st_unexpected++; break; }
        if (body[1] != 0) fatal("%s %d refused: CONNACK return code %d", c->is_pub ? "publisher" : "subscriber", c->index, body[1]);
        if (c->is_pub) {
          on_ready(c);
        } else {
          c->state = ST_WAIT_SUBACK;
          queue_subscribe(c);
        }
        break;
      case 9:  // SUBACK
        if (c->state != ST_WAIT_SUBACK || rl < 3) { st_unexpected++; break; }
        {
          // MQTT 5: packet id, property length (Vigil sends none here: one byte), reason code
          size_t at = cfg.sub_v5_alias >= 0 ? 3 + (size_t)body[2] : 2;
          uint8_t granted = at < rl ? body[at] : 0xff;
          if (granted != cfg.qos) fatal("subscriber %d: granted QoS %d, wanted %d", c->index, granted, cfg.qos);
        }
        on_ready(c);
        break;
      case 13:  // PINGRESP
        break;
      default:
        st_unexpected++;
    }
    if (c->state == ST_CLOSED) return len;
    pos = p + rl;
  }
  return pos;
}

static void on_readable(conn_t *c) {
  for (int r = 0; r < READS_PER_EVENT && c->state != ST_CLOSED; r++) {
    if (c->pend_len) memcpy(scratch, c->pend, c->pend_len);
    size_t room = SCRATCH_BYTES - c->pend_len;
    ssize_t n = recv(c->fd, scratch + c->pend_len, room, 0);
    if (n == 0) { close_conn(c, "EOF"); return; }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      close_conn(c, strerror(errno));
      return;
    }
    size_t total = c->pend_len + (size_t)n;
    int64_t now = now_ns();
    size_t used = parse_frames(c, scratch, total, now);
    if (c->state == ST_CLOSED) return;
    size_t rest = total - used;
    if (rest > c->pend_cap) {
      size_t cap = c->pend_cap ? c->pend_cap : 256;
      while (cap < rest) cap *= 2;
      uint8_t *np = realloc(c->pend, cap);
      if (!np) fatal("out of memory");
      c->pend = np;
      c->pend_cap = cap;
    }
    if (rest) memcpy(c->pend, scratch + used, rest);
    c->pend_len = rest;
    if ((size_t)n < room) return;  // drained the socket
  }
}

static void on_connected(conn_t *c) {
  int err = 0;
  socklen_t l = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
  if (err) fatal("%s %d: connect: %s", c->is_pub ? "publisher" : "subscriber", c->index, strerror(err));
  c->state = ST_WAIT_CONNACK;
  queue_connect(c);
  c->want_out = 1;  // registered with EPOLLOUT for the connect; flush resets it
}

static void start_connect(conn_t *c) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fatal("socket: %s", strerror(errno));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (cfg.bind_src) {
    // Same source-address spread as the Node generator (bench/gen/client.mjs loopbackSource).
    int i = c->is_pub ? 1000 + c->index : c->index;
    struct sockaddr_in src = { .sin_family = AF_INET, .sin_port = 0 };
    src.sin_addr.s_addr = htonl((127u << 24) | (uint32_t)(2 + i % 253));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) fatal("bind 127.0.0.%d: %s", 2 + i % 253, strerror(errno));
  }
  struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)c->port) };
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  c->fd = fd;
  c->state = ST_CONNECTING;
  if (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS) {
    fatal("connect 127.0.0.1:%d: %s", c->port, strerror(errno));
  }
  struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) fatal("epoll_ctl: %s", strerror(errno));
  c->want_out = 1;
}

// ------------------------------------------------------------------------------------------
// Main loop

static void watchdog(int64_t now) {
  // A QoS 0 window whose every message was dropped would never reopen: after 100 ms without
  // progress, treat the outstanding messages as lost (same rule as gen/worker.mjs).
  for (int i = 0; i < nflows; i++) {
    flow_t *f = &flows[i];
    int64_t mark = f->last_seq + f->inflight * 1000000000LL;
    if (mark == f->progress_mark && f->sent > f->last_seq + 1) {
      st_stalls++;
      if (f->inflight == 0) f->last_seq = f->sent - 1;
      pump(f, now);
    }
    f->progress_mark = mark;
  }
}

static void loop_turn(int timeout_ms) {
  struct epoll_event evs[MAX_EVENTS];
  int n = epoll_wait(ep, evs, MAX_EVENTS, timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return;
    fatal("epoll_wait: %s", strerror(errno));
  }
  for (int i = 0; i < n; i++) {
    conn_t *c = evs[i].data.ptr;
    uint32_t e = evs[i].events;
    if (c->state == ST_CLOSED) continue;
    if (c->state == ST_CONNECTING) {
      if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
      continue;
    }
    if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
    if (c->state != ST_CLOSED && (e & EPOLLOUT)) mark_out(c);
  }
  int64_t now = now_ns();
  if (running && cfg.rate > 0) {
    rate_tokens += (double)cfg.rate * (double)(now - rate_last_ns) / 1e9;
    double cap = (double)cfg.rate / 100.0 + (double)cfg.inflight;  // ≤ 10 ms burst
    if (rate_tokens > cap) rate_tokens = cap;
    rate_last_ns = now;
    for (int i = 0; i < nflows; i++) mark_flow(&flows[i]);
  }
  for (int i = 0; i < dirty_count; i++) {
    flow_t *f = dirty_flows[i];
    f->dirty = 0;
    pump(f, now);
  }
  dirty_count = 0;
  flush_all();
}

static int next_timeout_ms(int64_t now, int64_t deadline) {
  int64_t d = deadline - now;
  if (d <= 0) return 0;
  int64_t ms = (d + 999999) / 1000000;
  if (ms > 100) ms = 100;
  if (running && cfg.rate > 0 && ms > 1) ms = 1;
  return (int)ms;
}

// ------------------------------------------------------------------------------------------
// Connect storm (--scenario connect): `--concurrency` lanes, each one a closed loop of
// socket → CONNECT → CONNACK (latency recorded from the connect() call) → DISCONNECT → close,
// then the next connection on the same lane. With --hold every lane connects once and keeps
// its connection (a fleet arriving at once: --concurrency = --total); the result line is then
// printed when every lane has its CONNACK, and the connections stay open for --hold-ms so the
// harness can read the broker's memory. Client ids: PREFIX-<n> (n = 0, 1, ... in start order,
// or the lane number with --hold, so a repeated fleet reuses its ids and sessions).
// --tokens FILE: one "username<TAB>password" per line, used in order, each at most once.
// --will: a retained QoS 1 will on PREFIX/<id>/state; --clean 0: persistent sessions.

typedef struct {
  int fd, state, id;
  int64_t seq;
  int64_t started;
  uint8_t in[64];
  size_t in_len;
} lane_t;

enum { LN_IDLE, LN_CONNECTING, LN_WAIT_CONNACK, LN_HELD, LN_DONE };

static struct {
  int concurrency, hold, clean, will;
  int64_t total, hold_ms;
  char prefix[100];
  char **tok_user, **tok_pass;
  int64_t ntokens;
} storm = { .concurrency = 100, .hold = 0, .clean = 1, .will = 0, .total = 0, .hold_ms = 0, .prefix = "storm" };

static lane_t *lanes;
static int64_t sm_started, sm_accepted, sm_accepted_total, sm_refused, sm_held;
static int64_t sm_first_start = -1, sm_last_ack;
static int64_t sm_refused_codes[256];

static void load_tokens(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) fatal("--tokens %s: %s", path, strerror(errno));
  size_t cap = 1024;
  storm.tok_user = malloc(cap * sizeof(char *));
  storm.tok_pass = malloc(cap * sizeof(char *));
  char *line = NULL;
  size_t lcap = 0;
  ssize_t n;
  while ((n = getline(&line, &lcap, f)) > 0) {
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    char *tab = strchr(line, '\t');
    if (!tab || n > 60000) continue;
    *tab = 0;
    if ((size_t)storm.ntokens == cap) {
      cap *= 2;
      storm.tok_user = realloc(storm.tok_user, cap * sizeof(char *));
      storm.tok_pass = realloc(storm.tok_pass, cap * sizeof(char *));
      if (!storm.tok_user || !storm.tok_pass) fatal("out of memory");
    }
    storm.tok_user[storm.ntokens] = strdup(line);
    storm.tok_pass[storm.ntokens] = strdup(tab + 1);
    storm.ntokens++;
  }
  free(line);
  fclose(f);
  if (storm.ntokens == 0) fatal("--tokens %s: no \"user<TAB>password\" lines", path);
}

// Per connection the generator pays, in its own context, most of the kernel's loopback TCP work
// for both ends (the handshake up to the broker's accept queue in connect(), the broker socket's
// receive path in each send(), the FIN exchange in close()), so what is left to cut is the
// generator's own syscalls. One epoll_ctl per connection: the CONNECT is sent right after
// connect() (on loopback the handshake has normally completed when connect() returns; EAGAIN
// falls back to waiting for EPOLLOUT), the descriptor is registered once for what it waits for,
// and close() drops the registration (no EPOLL_CTL_DEL). No TCP_NODELAY: a lane never has unacked
// data when it writes (the CONNACK acknowledges the CONNECT), so Nagle never holds a segment.
// DISCONNECT goes with MSG_MORE and the FIN of close() rides on the same segment.

static void lane_close(lane_t *l) {
  if (l->fd >= 0) {
    close(l->fd);  // the last reference: the kernel removes it from the epoll set
    l->fd = -1;
  }
}

static uint8_t connect_buf[2 * 65536 + 1024];  // CONNECT under construction (tokens ≤ 60,000 bytes)

/** Writes the lane's CONNECT; 1 = sent, 0 = not yet connected (EAGAIN), -1 = failed (closed). */
static int lane_write_connect(lane_t *l) {
  char id[160], topic[256];
  snprintf(id, sizeof id, "%s-%d", storm.prefix, l->id);
  const char *user = NULL, *pass = NULL;
  if (storm.ntokens > 0) {
    int64_t k = (storm.hold ? l->id : l->seq) % storm.ntokens;  // --hold: client id and token stay paired
    user = storm.tok_user[k];
    pass = storm.tok_pass[k];
  }
  size_t rl = 10 + 2 + strlen(id);
  if (storm.will) {
    snprintf(topic, sizeof topic, "%s/%s/state", storm.prefix, id);
    rl += 2 + strlen(topic) + 2 + 7;
  }
  if (user) rl += 2 + strlen(user) + 2 + strlen(pass);
  uint8_t *p = connect_buf;
  size_t h = 0;
  p[h++] = 0x10;
  h += put_varint(p + h, rl);
  h += put_str(p + h, "MQTT");
  p[h++] = 4;
  uint8_t flags = storm.clean ? 0x02 : 0;
  if (storm.will) flags |= 0x04 | (1 << 3) | 0x20;  // will, QoS 1, retained
  if (user) flags |= 0xc0;
  p[h++] = flags;
  p[h++] = (uint8_t)(cfg.keepalive >> 8);
  p[h++] = (uint8_t)cfg.keepalive;
  h += put_str(p + h, id);
  if (storm.will) {
    h += put_str(p + h, topic);
    h += put_str(p + h, "offline");
  }
  if (user) {
    h += put_str(p + h, user);
    h += put_str(p + h, pass);
  }
  ssize_t n = send(l->fd, p, h, MSG_NOSIGNAL);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  if (n != (ssize_t)h) { note_error("send CONNECT: %s", n < 0 ? strerror(errno) : "short write"); lane_close(l); l->state = LN_IDLE; return -1; }
  l->state = LN_WAIT_CONNACK;
  return 1;
}

/**
 * --rate N (connections per second, 0 = as fast as the lanes go): a token bucket with at most
 * 10 ms of burst. At a fixed rate two brokers (or two builds) do the same work per second, so
 * their CPU per connection compares even on a busy machine, where saturated runs do not.
 */
static int storm_may_start(int64_t now) {
  if (cfg.rate <= 0) return 1;
  rate_tokens += (double)cfg.rate * (double)(now - rate_last_ns) / 1e9;
  rate_last_ns = now;
  double cap = (double)cfg.rate / 100.0 + 1.0;
  if (rate_tokens > cap) rate_tokens = cap;
  if (rate_tokens < 1) return 0;
  rate_tokens -= 1;
  return 1;
}

/** Starts the lane's next connection; LN_DONE when the count, the tokens or the time ran out; LN_IDLE while --rate holds it. */
static void lane_start(lane_t *l, int lane_no, int64_t now) {
  l->state = LN_DONE;
  if (now >= t_measure_end) return;
  if (storm.total > 0 && sm_started >= storm.total) return;
  if (storm.ntokens > 0 && sm_started >= storm.ntokens) return;
  if (!storm_may_start(now)) { l->state = LN_IDLE; return; }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) { note_error("socket: %s", strerror(errno)); return; }
  int one = 1;
  int64_t n = sm_started++;
  if (cfg.bind_src) {
    struct sockaddr_in src = { .sin_family = AF_INET, .sin_port = 0 };
    src.sin_addr.s_addr = htonl((127u << 24) | (uint32_t)(2 + n % 253));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) { note_error("bind: %s", strerror(errno)); close(fd); return; }
  }
  struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)cfg.port) };
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  l->fd = fd;
  l->seq = n;
  l->id = storm.hold ? lane_no : (int)n;
  l->in_len = 0;
  l->started = now_ns();
  if (sm_first_start < 0 && l->started >= t_measure_start) sm_first_start = l->started;
  if (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS) {
    note_error("connect: %s", strerror(errno));
    close(fd);
    l->fd = -1;
    return;
  }
  l->state = LN_CONNECTING;
  int sent = lane_write_connect(l);
  if (sent < 0) return;
  struct epoll_event ev = { .events = sent ? EPOLLIN : EPOLLOUT, .data.u64 = (uint64_t)lane_no };
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) fatal("epoll_ctl: %s", strerror(errno));
}

/** EPOLLOUT on a lane whose handshake had not completed when connect() returned. */
static void lane_send_connect(lane_t *l, int lane_no) {
  int err = 0;
  socklen_t el = sizeof err;
  getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &el);
  if (err) { note_error("connect: %s", strerror(err)); lane_close(l); l->state = LN_IDLE; return; }
  if (lane_write_connect(l) <= 0) return;
  struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)lane_no };
  epoll_ctl(ep, EPOLL_CTL_MOD, l->fd, &ev);
}

static void lane_read(lane_t *l) {
  ssize_t n = recv(l->fd, l->in + l->in_len, sizeof l->in - l->in_len, 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) { note_error("connection closed before CONNACK (%s)", n < 0 ? strerror(errno) : "EOF"); lane_close(l); l->state = LN_IDLE; return; }
  l->in_len += (size_t)n;
  if (l->in_len < 4) return;
  if (l->in[0] != 0x20 || l->in[1] != 2) { note_error("expected CONNACK, got 0x%02x", l->in[0]); lane_close(l); l->state = LN_IDLE; return; }
  int64_t now = now_ns();
  int rc = l->in[3];
  if (rc != 0) {
    sm_refused++;
    sm_refused_codes[rc]++;
    lane_close(l);
    l->state = LN_IDLE;
    return;
  }
  sm_accepted_total++;
  if (storm.hold || (l->started >= t_measure_start && now < t_measure_end)) {
    sm_accepted++;
    hist_record(&lat_hist, now - l->started);
    sm_last_ack = now;
  }
  if (storm.hold) {
    l->state = LN_HELD;
    sm_held++;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)(l - lanes) };
    epoll_ctl(ep, EPOLL_CTL_MOD, l->fd, &ev);
    return;
  }
  static const uint8_t disconnect[2] = { 0xe0, 0 };
  send(l->fd, disconnect, 2, MSG_NOSIGNAL | MSG_MORE);  // held back: close() adds the FIN to it
  lane_close(l);
  l->state = LN_IDLE;
}

static void storm_result(int ok, const char *event) {
  double p50 = hist_quantile_us(&lat_hist, 0.5), p99 = hist_quantile_us(&lat_hist, 0.99);
  int64_t cpu_now = cpu_us(), wall_now = now_ns();
  double cpu_win = (double)(cpu_now - (cpu_at_start >= 0 ? cpu_at_start : cpu_at_launch));
  double wall_win = (double)(wall_now - (cpu_at_start >= 0 ? wall_at_start : wall_at_launch)) / 1000.0;
  FILE *f = stdout;
  fprintf(f, "{");
  if (event) fprintf(f, "\"event\":\"%s\",", event);
  fprintf(f, "\"ok\":%s,\"started\":%lld,\"accepted\":%lld,\"acceptedTotal\":%lld,\"refused\":%lld,\"held\":%lld,\"refusedCodes\":{",
          ok ? "true" : "false", (long long)sm_started, (long long)sm_accepted, (long long)sm_accepted_total, (long long)sm_refused, (long long)sm_held);
  int first = 1;
  for (int i = 0; i < 256; i++) {
    if (!sm_refused_codes[i]) continue;
    fprintf(f, "%s\"%d\":%lld", first ? "" : ",", i, (long long)sm_refused_codes[i]);
    first = 0;
  }
  fprintf(f, "},");
  if (p50 >= 0) fprintf(f, "\"p50Us\":%.1f,\"p99Us\":%.1f,", p50, p99);
  else fprintf(f, "\"p50Us\":null,\"p99Us\":null,");
  int64_t span = sm_first_start >= 0 && sm_last_ack > sm_first_start ? (sm_last_ack - sm_first_start) / 1000 : 0;
  fprintf(f, "\"spanUs\":%lld,\"cpuUs\":%.0f,\"wallUs\":%.0f,\"errors\":%lld,\"error\":", (long long)span, cpu_win, wall_win, (long long)st_errors);
  json_str(f, first_error);
  fprintf(f, "}\n");
  fflush(f);
}

static int run_connect_storm(void) {
  if (storm.hold) {
    if (storm.total <= 0) storm.total = storm.concurrency;
    storm.concurrency = (int)storm.total;
    // every held connection is one descriptor here: raise the soft limit to the hard one
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)storm.total + 64)
      fatal("--hold %lld connections needs that many descriptors; the limit is %lld", (long long)storm.total, (long long)rl.rlim_cur);
  }
  lanes = calloc((size_t)storm.concurrency, sizeof *lanes);
  if (!lanes) fatal("out of memory");
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) fatal("epoll_create1: %s", strerror(errno));
  printf("{\"event\":\"go\"}\n");
  fflush(stdout);
  t_go = now_ns();
  t_measure_start = storm.hold ? t_go : t_go + cfg.warmup_ms * 1000000LL;
  t_measure_end = t_measure_start + cfg.duration_ms * 1000000LL;
  if (storm.hold) { cpu_at_start = cpu_us(); wall_at_start = t_go; }
  rate_last_ns = t_go;
  rate_tokens = 1;
  for (int i = 0; i < storm.concurrency; i++) {
    lanes[i].fd = -1;
    lane_start(&lanes[i], i, t_go);
  }
  struct epoll_event evs[MAX_EVENTS];
  int active = storm.concurrency;
  while (active > 0) {
    int64_t now = now_ns();
    if (cpu_at_start < 0 && now >= t_measure_start) { cpu_at_start = cpu_us(); wall_at_start = now; }
    if (now >= t_measure_end) break;
    int wait_ms = next_timeout_ms(now, t_measure_end);
    if (cfg.rate > 0 && wait_ms > 1) wait_ms = 1;
    int n = epoll_wait(ep, evs, MAX_EVENTS, wait_ms);
    if (n < 0 && errno != EINTR) fatal("epoll_wait: %s", strerror(errno));
    if (cfg.rate > 0) {
      int64_t t = now_ns();
      for (int i = 0; i < storm.concurrency; i++) if (lanes[i].state == LN_IDLE) lane_start(&lanes[i], i, t);
    }
    for (int i = 0; i < n; i++) {
      int k = (int)evs[i].data.u64;
      lane_t *l = &lanes[k];
      if (l->state == LN_CONNECTING) lane_send_connect(l, k);
      else if (l->state == LN_WAIT_CONNACK) lane_read(l);
      else if (l->state == LN_HELD) {
        note_error("held connection %d closed by the broker", l->id);
        lane_close(l);
        l->state = LN_DONE;
        sm_held--;
      }
      if (l->state == LN_IDLE) lane_start(l, k, now_ns());
    }
    active = 0;
    for (int i = 0; i < storm.concurrency; i++) if (lanes[i].state == LN_CONNECTING || lanes[i].state == LN_WAIT_CONNACK || lanes[i].state == LN_IDLE) active++;
  }
  cpu_at_end = cpu_us();
  wall_at_end = now_ns();
  if (cpu_at_start < 0) { cpu_at_start = cpu_at_end; wall_at_start = wall_at_end; }
  int64_t unanswered = 0;
  for (int i = 0; i < storm.concurrency; i++) {
    lane_t *l = &lanes[i];
    if (l->state == LN_CONNECTING || l->state == LN_WAIT_CONNACK) { unanswered++; lane_close(l); l->state = LN_DONE; }
  }
  if (unanswered && storm.hold) note_error("%lld connections without CONNACK after %lld ms", (long long)unanswered, (long long)cfg.duration_ms);
  if (storm.hold) {
    storm_result(st_errors == 0, "connected");
    int64_t hold_end = now_ns() + storm.hold_ms * 1000000LL;
    for (int64_t now = now_ns(); now < hold_end; now = now_ns()) {
      int n = epoll_wait(ep, evs, MAX_EVENTS, next_timeout_ms(now, hold_end));
      for (int i = 0; i < n; i++) {
        lane_t *l = &lanes[(int)evs[i].data.u64];
        if (l->state != LN_HELD) continue;
        note_error("held connection %d closed by the broker", l->id);
        lane_close(l);
        l->state = LN_DONE;
        sm_held--;
      }
    }
    static const uint8_t disconnect[2] = { 0xe0, 0 };
    for (int i = 0; i < storm.concurrency; i++) {
      lane_t *l = &lanes[i];
      if (l->state != LN_HELD) continue;
      send(l->fd, disconnect, 2, MSG_NOSIGNAL);
      lane_close(l);
    }
  }
  storm_result(st_errors == 0, NULL);
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen --port P [--sub-port P2] [--host 127.0.0.1] --scenario pairs|fanout|fanin --qos 0|1|2\n"
          "               --pubs N --subs M --inflight W [--size 64] --duration-ms D --warmup-ms X\n"
          "               [--rate MSG_PER_S] [--topic PREFIX] [--max-msgs N] [--setup-timeout-ms 30000]\n"
          "               [--keepalive 600] [--turn-us 0] [--no-bind] [--sub-v5-alias N] [--pub-persistent]\n"
          "       loadgen --port P --scenario connect [--concurrency 100] [--total N] [--rate CONN_PER_S] [--hold --hold-ms MS]\n"
          "               [--tokens FILE] [--clean 0|1] [--will] [--id-prefix storm] --duration-ms D --warmup-ms X\n");
}

static int64_t num_arg(const char *name, const char *s, int64_t lo, int64_t hi) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end || v < lo || v > hi) {
    fprintf(stderr, "loadgen: --%s must be an integer in [%lld, %lld]\n", name, (long long)lo, (long long)hi);
    exit(2);
  }
  return v;
}

static void parse_args(int argc, char **argv) {
  static const struct option opts[] = {
    { "port", required_argument, 0, 'p' }, { "sub-port", required_argument, 0, 'P' },
    { "host", required_argument, 0, 'H' }, { "scenario", required_argument, 0, 's' },
    { "qos", required_argument, 0, 'q' }, { "pubs", required_argument, 0, 'n' },
    { "subs", required_argument, 0, 'm' }, { "inflight", required_argument, 0, 'w' },
    { "size", required_argument, 0, 'z' }, { "duration-ms", required_argument, 0, 'd' },
    { "warmup-ms", required_argument, 0, 'u' }, { "rate", required_argument, 0, 'r' },
    { "topic", required_argument, 0, 't' }, { "max-msgs", required_argument, 0, 'x' },
    { "setup-timeout-ms", required_argument, 0, 'T' }, { "keepalive", required_argument, 0, 'k' },
    { "turn-us", required_argument, 0, 'U' }, { "sub-v5-alias", required_argument, 0, 'A' }, { "no-bind", no_argument, 0, 'B' }, { "pub-persistent", no_argument, 0, 'C' }, { "help", no_argument, 0, 'h' },
    { "concurrency", required_argument, 0, 1001 }, { "total", required_argument, 0, 1002 }, { "hold", no_argument, 0, 1003 },
    { "hold-ms", required_argument, 0, 1004 }, { "tokens", required_argument, 0, 1005 }, { "clean", required_argument, 0, 1006 },
    { "will", no_argument, 0, 1007 }, { "id-prefix", required_argument, 0, 1008 }, { 0, 0, 0, 0 },
  };
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
      case 'p': cfg.port = (int)num_arg("port", optarg, 1, 65535); break;
      case 'P': cfg.sub_port = (int)num_arg("sub-port", optarg, 1, 65535); break;
      case 'H':
        if (strcmp(optarg, "127.0.0.1") != 0 && strcmp(optarg, "localhost") != 0) {
          fprintf(stderr, "loadgen: refusing --host %s: loopback (127.0.0.1) only\n", optarg);
          exit(2);
        }
        break;
      case 's':
        if (!strcmp(optarg, "pairs")) cfg.scenario = SC_PAIRS;
        else if (!strcmp(optarg, "fanout")) cfg.scenario = SC_FANOUT;
        else if (!strcmp(optarg, "fanin")) cfg.scenario = SC_FANIN;
        else if (!strcmp(optarg, "connect")) cfg.scenario = SC_CONNECT;
        else { fprintf(stderr, "loadgen: unknown --scenario %s\n", optarg); exit(2); }
        break;
      case 'q': cfg.qos = (int)num_arg("qos", optarg, 0, 2); break;
      case 'n': cfg.pubs = (int)num_arg("pubs", optarg, 1, MAX_CLIENTS / 2); break;
      case 'm': cfg.subs = (int)num_arg("subs", optarg, 1, MAX_CLIENTS / 2); break;
      case 'w': cfg.inflight = (int)num_arg("inflight", optarg, 1, 60000); break;
      case 'z': cfg.size = (int)num_arg("size", optarg, 16, 1 << 16); break;
      case 'd': cfg.duration_ms = num_arg("duration-ms", optarg, 1, 3600000); break;
      case 'u': cfg.warmup_ms = num_arg("warmup-ms", optarg, 0, 3600000); break;
      case 'r': cfg.rate = num_arg("rate", optarg, 0, 1000000000LL); break;
      case 't':
        if (strlen(optarg) == 0 || strlen(optarg) >= sizeof cfg.topic) { fprintf(stderr, "loadgen: bad --topic\n"); exit(2); }
        strcpy(cfg.topic, optarg);
        break;
      case 'x': cfg.max_msgs = num_arg("max-msgs", optarg, 1, 4000000000LL); break;
      case 'T': cfg.setup_timeout_ms = num_arg("setup-timeout-ms", optarg, 100, 600000); break;
      case 'k': cfg.keepalive = (int)num_arg("keepalive", optarg, 0, 65535); break;
      case 'U': cfg.turn_us = num_arg("turn-us", optarg, 0, 100000); break;
      case 'A': cfg.sub_v5_alias = (int)num_arg("sub-v5-alias", optarg, 0, 65535); break;
      case 'B': cfg.bind_src = 0; break;
      case 'C': cfg.pub_persistent = 1; break;
      case 1001: storm.concurrency = (int)num_arg("concurrency", optarg, 1, MAX_CLIENTS); break;
      case 1002: storm.total = num_arg("total", optarg, 0, 100000000LL); break;
      case 1003: storm.hold = 1; break;
      case 1004: storm.hold_ms = num_arg("hold-ms", optarg, 0, 600000); break;
      case 1005: load_tokens(optarg); break;
      case 1006: storm.clean = (int)num_arg("clean", optarg, 0, 1); break;
      case 1007: storm.will = 1; break;
      case 1008:
        if (strlen(optarg) == 0 || strlen(optarg) >= sizeof storm.prefix || strchr(optarg, '+') || strchr(optarg, '#')) { fprintf(stderr, "loadgen: bad --id-prefix\n"); exit(2); }
        strcpy(storm.prefix, optarg);
        break;
      case 'h': usage(); exit(0);
      default: usage(); exit(2);
    }
  }
  if (optind < argc || !cfg.port) { usage(); exit(2); }
  if (!cfg.sub_port) cfg.sub_port = cfg.port;
  if (storm.hold && storm.total > MAX_CLIENTS) { fprintf(stderr, "loadgen: --hold takes at most %d connections\n", MAX_CLIENTS); exit(2); }
  if (cfg.scenario == SC_PAIRS && cfg.pubs != cfg.subs) { fprintf(stderr, "loadgen: pairs needs --pubs == --subs\n"); exit(2); }
  if (!cfg.topic[0]) {
    const char *d = cfg.scenario == SC_FANOUT ? "bench/fanout" : cfg.scenario == SC_FANIN ? "bench/fanin" : cfg.qos == 2 ? "bench/q2" : cfg.qos ? "bench/q1" : "bench/q0";
    strcpy(cfg.topic, d);
  }
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  // Last resort: SIGALRM's default action ends the process whatever the loop is doing.
  alarm((unsigned)((cfg.setup_timeout_ms + cfg.warmup_ms + cfg.duration_ms + storm.hold_ms) / 1000 + 15));
  wall_at_launch = now_ns();
  cpu_at_launch = cpu_us();
  if (cfg.scenario == SC_CONNECT) return run_connect_storm();

  nflows = cfg.pubs;
  nconns = cfg.pubs + cfg.subs;
  conns = calloc((size_t)nconns, sizeof *conns);
  flows = calloc((size_t)nflows, sizeof *flows);
  out_list = calloc((size_t)nconns, sizeof *out_list);
  dirty_flows = calloc((size_t)nflows, sizeof *dirty_flows);
  scratch = malloc(SCRATCH_BYTES);
  if (!conns || !flows || !out_list || !dirty_flows || !scratch) fatal("out of memory");
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) fatal("epoll_create1: %s", strerror(errno));

  // Subscribers first (index 0..subs-1), then publishers.
  for (int j = 0; j < cfg.subs; j++) {
    conn_t *c = &conns[j];
    c->fd = -1;
    c->index = j;
    c->port = cfg.sub_port;
    if (cfg.scenario == SC_PAIRS) {
      snprintf(c->topic, sizeof c->topic, "%s/%d", cfg.topic, j);
      c->track = j;
    } else {
      snprintf(c->topic, sizeof c->topic, cfg.scenario == SC_FANIN ? "%s/+" : "%s", cfg.topic);
      c->track = j == 0 ? -2 : -1;
    }
  }
  for (int i = 0; i < cfg.pubs; i++) {
    conn_t *c = &conns[cfg.subs + i];
    flow_t *f = &flows[i];
    c->fd = -1;
    c->is_pub = 1;
    c->index = i;
    c->port = cfg.port;
    c->flow = f;
    c->track = -1;
    if (cfg.scenario == SC_FANOUT) snprintf(c->topic, sizeof c->topic, "%s", cfg.topic);
    else snprintf(c->topic, sizeof c->topic, "%s/%d", cfg.topic, i);
    f->c = c;
    f->index = i;
    f->last_seq = -1;
    f->progress_mark = -1;
    if (cfg.qos) {
      f->outstanding = calloc(8192, 1);
      f->sent_at = calloc(65536, sizeof *f->sent_at);
      if (!f->outstanding || !f->sent_at) fatal("out of memory");
    }
    build_template(f);
  }

  // Setup: connect everything, CONNECT, SUBSCRIBE; bounded by the setup timeout.
  for (int k = 0; k < nconns; k++) start_connect(&conns[k]);
  int64_t setup_deadline = now_ns() + cfg.setup_timeout_ms * 1000000LL;
  while (ready_count < nconns) {
    int64_t now = now_ns();
    if (now >= setup_deadline) fatal("setup timed out: %d of %d clients ready after %lld ms", ready_count, nconns, (long long)cfg.setup_timeout_ms);
    loop_turn(next_timeout_ms(now, setup_deadline));
  }

  // Run: warm-up, then the measured window; CPU from getrusage over the window only.
  t_go = now_ns();
  t_measure_start = t_go + cfg.warmup_ms * 1000000LL;
  t_measure_end = t_measure_start + cfg.duration_ms * 1000000LL;
  printf("{\"event\":\"go\"}\n");
  fflush(stdout);
  running = 1;
  rate_last_ns = t_go;
  rate_tokens = cfg.rate > 0 ? (double)cfg.inflight : 0;
  for (int i = 0; i < nflows; i++) pump(&flows[i], t_go);
  flush_all();
  int64_t next_watchdog = t_go + WATCHDOG_NS;
  int64_t last_turn = 0;
  for (;;) {
    int64_t now = now_ns();
    if (cpu_at_start < 0 && now >= t_measure_start) {
      cpu_at_start = cpu_us();
      wall_at_start = now_ns();
    }
    if (now >= t_measure_end) break;
    if (now >= next_watchdog) {
      watchdog(now);
      flush_all();
      next_watchdog = now + WATCHDOG_NS;
    }
    int64_t next = t_measure_end;
    if (cpu_at_start < 0 && t_measure_start < next) next = t_measure_start;
    if (next_watchdog < next) next = next_watchdog;
    // --turn-us: at most one loop turn per N µs, so more bytes accumulate per read and per
    // write (fewer syscalls, each one costing the loopback TCP path in full).
    if (cfg.turn_us > 0 && last_turn > 0) {
      int64_t wait = last_turn + cfg.turn_us * 1000 - now;
      if (wait > 0) {
        if (wait > next - now) wait = next - now;
        struct timespec ts = { .tv_sec = 0, .tv_nsec = wait };
        if (wait > 0) nanosleep(&ts, NULL);
      }
      now = now_ns();
    }
    last_turn = now;
    loop_turn(next_timeout_ms(now, next));
  }
  cpu_at_end = cpu_us();
  wall_at_end = now_ns();
  if (cpu_at_start < 0) { cpu_at_start = cpu_at_end; wall_at_start = wall_at_end; }
  running = 0;

  // Linger 200 ms as gen/worker.mjs does: keep reading (and acknowledging) without
  // publishing, so the broker sees no disconnects while the harness takes its last sample.
  int64_t linger_end = now_ns() + 200000000LL;
  for (int64_t now = now_ns(); now < linger_end; now = now_ns()) loop_turn(next_timeout_ms(now, linger_end));

  // Polite close: DISCONNECT, one last write, close.
  for (int k = 0; k < nconns; k++) {
    conn_t *c = &conns[k];
    if (c->state == ST_CLOSED) continue;
    uint8_t *d = out_reserve(c, 2);
    if (d) { d[0] = 0xe0; d[1] = 0; }
  }
  flush_all();
  for (int k = 0; k < nconns; k++) {
    conn_t *c = &conns[k];
    if (c->state != ST_CLOSED) {
      shutdown(c->fd, SHUT_WR);
      close(c->fd);
      c->state = ST_CLOSED;
    }
  }
  emit_result(st_errors == 0);
  return 0;
}
