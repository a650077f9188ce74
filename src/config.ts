// Every setting Vigil has, in one table: its config-file key, its environment variable,
// its default, how it is parsed and one line of documentation. The environment wins over
// the file. A bad value throws ConfigError naming the setting; the CLI turns that into one
// line on stderr and exit code 2.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parse as parseYaml } from 'yaml';

export class ConfigError extends Error {
  constructor(readonly setting: string, message: string) {
    super(`${setting}: ${message}`);
  }
}

type Kind = 'int' | 'port' | 'string' | 'bool' | 'enum' | 'list';

interface SettingDef<T> {
  readonly env: string;
  readonly kind: Kind;
  readonly default: T;
  readonly doc: string;
  readonly values?: readonly string[];
  readonly min?: number;
  readonly max?: number;
  /** Never printed (admin token, secrets). */
  readonly secret?: boolean;
}

function int(env: string, def: number, doc: string, min = 0, max = Number.MAX_SAFE_INTEGER): SettingDef<number> {
  return { env, kind: 'int', default: def, doc, min, max };
}
function port(env: string, def: number, doc: string): SettingDef<number> {
  return { env, kind: 'port', default: def, doc, min: 0, max: 65535 };
}
function str(env: string, def: string, doc: string, secret = false): SettingDef<string> {
  return { env, kind: 'string', default: def, doc, secret };
}
function bool(env: string, def: boolean, doc: string): SettingDef<boolean> {
  return { env, kind: 'bool', default: def, doc };
}
function oneOf<T extends string>(env: string, values: readonly T[], def: T, doc: string): SettingDef<T> {
  return { env, kind: 'enum', default: def, doc, values };
}
function list(env: string, def: string[], doc: string): SettingDef<string[]> {
  return { env, kind: 'list', default: def, doc };
}

export const SETTINGS = {
  // Listeners and node
  mqttPort: port('VIGIL_MQTT_PORT', 1883, 'MQTT over TCP port (0 = pick a free port)'),
  bind: str('VIGIL_BIND', '0.0.0.0', 'Address the MQTT, TLS and WebSocket listeners bind to'),
  metricsPort: port('VIGIL_METRICS_PORT', 9464, 'HTTP port for /metrics, /healthz, /readyz and the admin API (0 = pick a free port)'),
  metricsBind: str('VIGIL_METRICS_BIND', '0.0.0.0', 'Address the HTTP metrics/admin listener binds to'),
  nodeId: str('VIGIL_NODE_ID', '', 'Node identity in the cluster and in metrics (default: host name + pid)'),
  redisUrl: str('VIGIL_REDIS_URL', '', 'Redis URL; unset = single node with in-memory state'),
  logLevel: oneOf('VIGIL_LOG_LEVEL', ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const, 'info', 'Log level (JSON logs on stdout)'),

  // Identity
  auth: oneOf('VIGIL_AUTH', ['none', 'jwt'] as const, 'none', 'Authentication mode: none (anonymous allowed) or jwt'),
  acl: str('VIGIL_ACL', '', 'ACL policy file (YAML or JSON), hot-reloaded; unset with auth=none allows everything'),
  authWorkers: int('VIGIL_AUTH_WORKERS', 0, 'Worker threads verifying JWTs and evaluating ACLs; 0 = one per CPU the process may run on (its affinity), at most 2', 0, 64),
  authQueueMax: int('VIGIL_AUTH_QUEUE_MAX', 1000, 'Tokens and ACL questions in the auth pool at once (running or queued for a thread); more tokens wait in the admission queue, more ACL questions are evaluated on the main thread', 1),
  authAdmissionMax: int('VIGIL_AUTH_ADMISSION_MAX', 50000, 'CONNECT tokens waiting (first in, first out) for room in the auth pool; a CONNECT past it gets Server Busy (0 = none wait: Server Busy once the pool holds VIGIL_AUTH_QUEUE_MAX)', 0),
  authAdmissionBytes: int('VIGIL_AUTH_ADMISSION_BYTES', 67108864, 'Bytes of tokens waiting in the admission queue at most; a CONNECT past it gets Server Busy', 65536),
  jwks: str('VIGIL_JWKS', '', 'JWKS file path or https URL (http:// only for loopback)'),
  jwtSecret: str('VIGIL_JWT_SECRET', '', 'Shared secret for HS256/384/512 tokens (HS* is refused without it)', true),
  jwtIssuer: str('VIGIL_JWT_ISSUER', '', 'Required iss claim (unset = not checked)'),
  jwtAudience: str('VIGIL_JWT_AUDIENCE', '', 'Required aud claim (unset = not checked)'),
  jwtClockToleranceS: int('VIGIL_JWT_CLOCK_TOLERANCE_S', 30, 'Clock skew tolerated on exp/nbf, seconds', 0, 3600),
  jwtAlgorithms: list('VIGIL_JWT_ALGORITHMS', ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'], 'Allowed JWS algorithms (HS* additionally needs VIGIL_JWT_SECRET)'),
  jwtUsernameClaim: str('VIGIL_JWT_USERNAME_CLAIM', 'sub', 'Claim holding the username'),
  jwtRolesClaim: str('VIGIL_JWT_ROLES_CLAIM', 'roles', 'Claim holding the list of roles'),
  jwksMinRefreshS: int('VIGIL_JWKS_MIN_REFRESH_S', 30, 'Minimum seconds between JWKS refetches triggered by an unknown kid', 0),
  jwksMaxBytes: int('VIGIL_JWKS_MAX_BYTES', 1048576, 'Largest JWKS document read from a URL, bytes (the body is streamed and the fetch abandoned past it)', 1024, 67108864),
  jwksRetiredGraceS: int('VIGIL_JWKS_RETIRED_GRACE_S', 0, 'Seconds a key removed from the JWKS keeps verifying', 0),
  willAuthz: oneOf('VIGIL_WILL_AUTHZ', ['connect+fire', 'fire', 'connect'] as const, 'connect+fire', 'When a will is authorized: at CONNECT, when it fires, or both'),
  tokenExpiry: oneOf('VIGIL_TOKEN_EXPIRY', ['disconnect', 'ignore'] as const, 'disconnect', 'What happens to a connection whose token expires'),
  willGraceMs: int('VIGIL_WILL_GRACE_MS', 0, 'MQTT 3.1.1 only: hold a will this long after an abnormal disconnect; a reconnect cancels it', 0),
  revokedRetained: oneOf('VIGIL_REVOKED_RETAINED', ['keep', 'drop'] as const, 'keep', 'Retained messages (and retained wills) published by a subject when it is revoked: keep them, or delete them at revocation'),
  deniedPublish311: oneOf('VIGIL_DENIED_PUBLISH_311', ['drop', 'disconnect'] as const, 'drop', 'MQTT 3.1.1 has no negative PUBACK: drop a denied publish (and ack it) or disconnect'),
  sessionTakeover: oneOf('VIGIL_SESSION_TAKEOVER', ['same-identity', 'any'] as const, 'same-identity', 'Who may take over a client id in use (online, with a stored session or a pending will): only the identity that owns it, or any client (auth=none fleets)'),
  adminToken: str('VIGIL_ADMIN_TOKEN', '', 'Bearer token for the admin API (unset = admin API off)', true),

  // Protocol limits
  maxConnections: int('VIGIL_MAX_CONNECTIONS', 100000, 'Connections per node; over it new sockets are refused', 1),
  maxPacketSize: int('VIGIL_MAX_PACKET_SIZE', 1048576, 'Largest packet accepted, bytes (checked from the fixed header)', 64, 268435455),
  maxInflight: int('VIGIL_MAX_INFLIGHT', 100, 'Outgoing QoS 1/2 messages unacknowledged per client (also the Receive Maximum sent to 5.0 clients)', 1, 65535),
  maxQueued: int('VIGIL_MAX_QUEUED', 1000, 'Messages queued per session (offline or beyond in-flight)', 0),
  maxQueuedBytes: int('VIGIL_MAX_QUEUED_BYTES', 16777216, 'Bytes (payload and topic) queued per session (offline or beyond in-flight)', 0),
  queuedBytesBudget: int('VIGIL_QUEUED_BYTES_BUDGET', 268435456, 'Bytes (payload and topic) queued in all session queues of the node together', 0),
  queueOverflow: oneOf('VIGIL_QUEUE_OVERFLOW', ['drop-oldest', 'drop-new', 'disconnect'] as const, 'drop-oldest', 'What happens when a session queue is full, by count or bytes, or the node budget is spent (QoS 0 is always dropped first)'),
  connectTimeoutS: int('VIGIL_CONNECT_TIMEOUT_S', 10, 'Seconds a socket may stay open without a CONNECT', 1, 3600),
  connectAdmissionTimeoutS: int('VIGIL_CONNECT_ADMISSION_TIMEOUT_S', 120, 'Seconds a received CONNECT may wait for the broker (admission queue, token verification, session claim) before the socket is closed', 1, 3600),
  listenBacklog: int('VIGIL_LISTEN_BACKLOG', 65535, 'Pending TCP connections the kernel queues per listener before accepting (capped by net.core.somaxconn, so raising that sysctl is what counts); a fleet reconnecting at once needs more than the usual 511', 1, 65535),
  maxKeepaliveS: int('VIGIL_MAX_KEEPALIVE_S', 65535, 'Largest keep alive granted; 5.0 clients asking for more get Server Keep Alive', 1, 65535),
  maxSessionExpiryS: int('VIGIL_MAX_SESSION_EXPIRY_S', 4294967295, 'Largest session expiry interval granted, seconds', 0, 4294967295),
  topicAliasMax: int('VIGIL_TOPIC_ALIAS_MAX', 64, 'Topic Alias Maximum offered to 5.0 clients', 0, 65535),
  outgoingTopicAliases: int('VIGIL_OUTGOING_TOPIC_ALIASES', 64, 'Topic aliases Vigil assigns per 5.0 client to the topics it sends it most (at most the client\'s Topic Alias Maximum); 0 sends none', 0, 65535),
  maxTopicLength: int('VIGIL_MAX_TOPIC_LENGTH', 65535, 'Longest topic name or filter, bytes', 1, 65535),
  maxTopicLevels: int('VIGIL_MAX_TOPIC_LEVELS', 128, 'Most levels in a topic name or filter', 1, 1024),
  maxSubscriptionsPerClient: int('VIGIL_MAX_SUBSCRIPTIONS_PER_CLIENT', 1000, 'Subscriptions one session may hold', 1),
  connectRatePerAddress: int('VIGIL_CONNECT_RATE_PER_ADDRESS', 0, 'New connections per second per source address (burst: 2x); 0 = off (behind a TCP proxy every client shares its address)', 0),
  authFailuresPerAddress: int('VIGIL_AUTH_FAILURES_PER_ADDRESS', 60, 'Failed token signature checks per minute per source address before the address may not start new ones (1 s, doubling to 5 min; tokens already verified still get in); 0 = off', 0),
  authFailuresPerUsername: int('VIGIL_AUTH_FAILURES_PER_USERNAME', 10, 'Deprecated, ignored (a username is not verified before the token is: anyone could lock its owner out); still validated', 0),
  outputBufferBytes: int('VIGIL_OUTPUT_BUFFER_BYTES', 4194304, 'Socket write buffer per connection; past it QoS 0 is dropped and QoS 1/2 wait in the session queue', 1024),
  sysIntervalS: int('VIGIL_SYS_INTERVAL_S', 10, '$SYS statistics publish interval, seconds (0 = off)', 0, 86400),
  retainAvailable: bool('VIGIL_RETAIN_AVAILABLE', true, 'Whether retained messages are supported'),
  shutdownGraceMs: int('VIGIL_SHUTDOWN_GRACE_MS', 2000, 'On SIGTERM, how long to wait for sockets to flush before exit', 0),

  // Cluster
  heartbeatMs: int('VIGIL_HEARTBEAT_MS', 1000, 'Cluster: lease renewal period', 50),
  nodeTimeoutMs: int('VIGIL_NODE_TIMEOUT_MS', 3000, 'Cluster: a node whose lease is older than this is dead', 100),
  clusterConnectsInFlight: int('VIGIL_CLUSTER_CONNECTS_IN_FLIGHT', 256, 'Cluster: CONNECTs whose claim and session load are in Redis at once; more wait their turn (so a reconnect storm cannot delay the lease renewal past the fence)', 1, 100000),
  redisClusterNodes: list('VIGIL_REDIS_CLUSTER_NODES', [], 'Cluster: comma-separated host:port seeds of a Redis Cluster (instead of VIGIL_REDIS_URL)'),
  redisPrefix: str('VIGIL_REDIS_PREFIX', 'vigil', 'Cluster: prefix of every Redis key'),
  redisSentinels: list('VIGIL_REDIS_SENTINELS', [], 'Cluster: comma-separated host:port of Redis Sentinels (instead of VIGIL_REDIS_URL); every connection follows the master they name'),
  redisSentinelMaster: str('VIGIL_REDIS_SENTINEL_MASTER', 'mymaster', 'Cluster: the master group name the sentinels monitor'),
  redisSentinelUsername: str('VIGIL_REDIS_SENTINEL_USERNAME', '', 'Cluster: ACL user for the sentinels (unset = default user)'),
  redisSentinelPassword: str('VIGIL_REDIS_SENTINEL_PASSWORD', '', 'Cluster: password of the sentinels (requirepass of sentinel.conf)', true),
  redisSentinelTls: bool('VIGIL_REDIS_SENTINEL_TLS', false, 'Cluster: connect to the sentinels over TLS'),
  redisUsername: str('VIGIL_REDIS_USERNAME', '', 'Cluster: ACL user for Redis and its replicas (one in VIGIL_REDIS_URL wins)'),
  redisPassword: str('VIGIL_REDIS_PASSWORD', '', 'Cluster: Redis password, kept out of the URL (one in VIGIL_REDIS_URL wins)', true),
  redisTls: bool('VIGIL_REDIS_TLS', false, 'Cluster: connect to Redis over TLS (rediss:// URLs always do)'),
  redisTlsCa: str('VIGIL_REDIS_TLS_CA', '', 'Cluster: CA bundle that signed the Redis (and sentinel) certificates (PEM file; unset = system CAs)'),
  redisWaitReplicas: int('VIGIL_REDIS_WAIT_REPLICAS', 0, 'Cluster: acknowledge a QoS 1/2 publish (and count a session or will as stored) only once Redis WAIT confirmed this many replicas have it; 0 = off', 0, 16),
  redisWaitTimeoutMs: int('VIGIL_REDIS_WAIT_TIMEOUT_MS', 500, 'Cluster: how long one WAIT may take; past it the writes are not acknowledged (the client retries)', 1, 60000),

  // Listeners (operate)
  tlsPort: port('VIGIL_TLS_PORT', 0, 'MQTT over TLS port (0 = off)'),
  tlsCert: str('VIGIL_TLS_CERT', '', 'TLS certificate chain (PEM file)'),
  tlsKey: str('VIGIL_TLS_KEY', '', 'TLS private key (PEM file)'),
  tlsCa: str('VIGIL_TLS_CA', '', 'CA bundle for client certificates (PEM file)'),
  tlsRequireClientCert: bool('VIGIL_TLS_REQUIRE_CLIENT_CERT', false, 'Refuse TLS clients without a certificate signed by VIGIL_TLS_CA'),
  wsPort: port('VIGIL_WS_PORT', 0, 'MQTT over WebSocket port, path /mqtt (0 = off)'),
} as const;

type SettingsTable = typeof SETTINGS;
export type Config = { -readonly [K in keyof SettingsTable]: SettingsTable[K]['default'] extends infer D ? D extends readonly string[] ? string[] : D : never };

function parseValue(key: string, def: SettingDef<unknown>, raw: unknown): unknown {
  const name = `${def.env} (${key})`;
  switch (def.kind) {
    case 'int':
    case 'port': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : NaN;
      if (!Number.isInteger(n)) throw new ConfigError(name, `expected a whole number, got ${JSON.stringify(raw)}`);
      if (n < (def.min ?? 0) || n > (def.max ?? Number.MAX_SAFE_INTEGER)) {
        throw new ConfigError(name, `${n} is out of range ${def.min}..${def.max}`);
      }
      return n;
    }
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      const s = String(raw).trim().toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(s)) return true;
      if (['0', 'false', 'no', 'off'].includes(s)) return false;
      throw new ConfigError(name, `expected true or false, got ${JSON.stringify(raw)}`);
    }
    case 'enum': {
      const s = String(raw).trim();
      if (!def.values!.includes(s)) throw new ConfigError(name, `expected one of ${def.values!.join(', ')}, got ${JSON.stringify(raw)}`);
      return s;
    }
    case 'list': {
      if (Array.isArray(raw)) return raw.map(String);
      return String(raw).split(',').map((s) => s.trim()).filter(Boolean);
    }
    case 'string':
      if (typeof raw !== 'string' && typeof raw !== 'number') throw new ConfigError(name, `expected a string`);
      return String(raw);
  }
}

export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('--config', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let data: unknown;
  try {
    data = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError('--config', `${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (data == null) return {};
  if (typeof data !== 'object' || Array.isArray(data)) throw new ConfigError('--config', `${path} must hold a mapping of setting names to values`);
  return data as Record<string, unknown>;
}

/** Builds the config from defaults, then a config file's keys, then VIGIL_* variables. */
export function loadConfig(options: { file?: Record<string, unknown>; env?: NodeJS.ProcessEnv; overrides?: Partial<Config> } = {}): Config {
  const env = options.env ?? process.env;
  const fileValues = options.file ?? {};
  const byEnv = new Map(Object.entries(SETTINGS).map(([k, d]) => [d.env, k]));
  for (const key of Object.keys(fileValues)) {
    if (!(key in SETTINGS) && !byEnv.has(key)) throw new ConfigError(key, 'unknown setting in config file (see vigil --help)');
  }
  const out: Record<string, unknown> = {};
  for (const [key, def] of Object.entries(SETTINGS) as [string, SettingDef<unknown>][]) {
    let raw: unknown = def.default;
    if (key in fileValues) raw = fileValues[key];
    else if (def.env in fileValues) raw = fileValues[def.env];
    const fromEnv = env[def.env];
    if (fromEnv !== undefined && fromEnv !== '') raw = fromEnv;
    out[key] = raw === def.default ? def.default : parseValue(key, def, raw);
  }
  Object.assign(out, options.overrides ?? {});
  const config = out as Config;
  if (!config.nodeId) config.nodeId = `${hostname()}-${process.pid}`;
  validate(config);
  return config;
}

function validate(c: Config): void {
  if (c.auth === 'jwt' && !c.jwks && !c.jwtSecret) {
    throw new ConfigError('VIGIL_JWKS', 'VIGIL_AUTH=jwt needs VIGIL_JWKS (or VIGIL_JWT_SECRET for HS* tokens)');
  }
  const known = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'HS256', 'HS384', 'HS512']);
  for (const a of c.jwtAlgorithms) {
    if (!known.has(a)) throw new ConfigError('VIGIL_JWT_ALGORITHMS', `unknown or refused algorithm ${JSON.stringify(a)}`);
  }
  // URL schemes are case-insensitive (RFC 3986 §3.1): HTTP://host is plain http too
  if (c.jwks && /^http:\/\//i.test(c.jwks)) {
    let host = '';
    try {
      host = new URL(c.jwks).hostname;
    } catch {
      throw new ConfigError('VIGIL_JWKS', `not a valid URL: ${JSON.stringify(c.jwks)}`);
    }
    if (!['127.0.0.1', 'localhost', '[::1]', '::1'].includes(host)) {
      throw new ConfigError('VIGIL_JWKS', 'http:// is accepted for loopback only; use https://');
    }
  }
  if (c.tlsPort && (!c.tlsCert || !c.tlsKey)) throw new ConfigError('VIGIL_TLS_PORT', 'needs VIGIL_TLS_CERT and VIGIL_TLS_KEY');
  if (c.tlsRequireClientCert && !c.tlsCa) throw new ConfigError('VIGIL_TLS_REQUIRE_CLIENT_CERT', 'needs VIGIL_TLS_CA');
  if (c.redisUrl && !/^rediss?:\/\//.test(c.redisUrl)) throw new ConfigError('VIGIL_REDIS_URL', 'expected redis://host:port or rediss://');
  if (c.redisSentinels.length > 0 && c.redisClusterNodes.length > 0) throw new ConfigError('VIGIL_REDIS_SENTINELS', 'cannot be combined with VIGIL_REDIS_CLUSTER_NODES');
  for (const hp of [...c.redisSentinels, ...c.redisClusterNodes]) {
    if (!/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(hp)) throw new ConfigError(c.redisSentinels.includes(hp) ? 'VIGIL_REDIS_SENTINELS' : 'VIGIL_REDIS_CLUSTER_NODES', `expected host:port, got ${JSON.stringify(hp)}`);
  }
  if (c.redisSentinels.length > 0 && !c.redisSentinelMaster) throw new ConfigError('VIGIL_REDIS_SENTINEL_MASTER', 'needs a master name with VIGIL_REDIS_SENTINELS');
  if (c.redisWaitReplicas > 0) {
    // WAIT counts the replicas of the one server a connection talks to: across a Redis Cluster's
    // masters it would confirm nothing about the keys on the others
    if (c.redisClusterNodes.length > 0) throw new ConfigError('VIGIL_REDIS_WAIT_REPLICAS', 'is not supported with VIGIL_REDIS_CLUSTER_NODES');
    // commands queue behind a WAIT on the same connection: it must end well inside their timeout
    if (c.redisWaitTimeoutMs * 2 > Math.max(1000, c.nodeTimeoutMs)) throw new ConfigError('VIGIL_REDIS_WAIT_TIMEOUT_MS', `must be at most half of max(1000, VIGIL_NODE_TIMEOUT_MS) = ${Math.max(1000, c.nodeTimeoutMs)}`);
  }
  if (c.nodeTimeoutMs <= c.heartbeatMs) throw new ConfigError('VIGIL_NODE_TIMEOUT_MS', 'must be larger than VIGIL_HEARTBEAT_MS');
}

/** The table for `vigil --help` and the README. Secrets show no default. */
export function describeSettings(): string {
  const rows = Object.entries(SETTINGS).map(([key, d]) => {
    const def = d.secret ? '(unset)' : Array.isArray(d.default) ? d.default.join(',') || '(unset)' : d.default === '' ? '(unset)' : String(d.default);
    return `  ${d.env.padEnd(34)} ${key.padEnd(26)} default ${def}\n      ${d.doc}`;
  });
  return rows.join('\n');
}
