// MQTT 5 re-authentication for mqtt.js clients, which have no API for AUTH 0x19.
//
//   const client = await mqtt.connectAsync(url, { protocolVersion: 5,
//     properties: { authenticationMethod: 'JWT', authenticationData: Buffer.from(token) } });
//   ...
//   await reauthenticate(client, freshToken);   // resolves on AUTH 0x00, rejects if refused
//
// The connection must have been opened with Authentication Method `JWT` (MQTT 5 §4.12):
// a client that sent its token as the CONNECT password cannot re-authenticate in place.

/** The parts of an mqtt.js v5 MqttClient this helper uses. */
export interface ReauthCapableClient {
  on(event: 'packetreceive', listener: (packet: { cmd: string; reasonCode?: number }) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  removeListener(event: string, listener: (...args: never[]) => void): unknown;
}

export function reauthenticate(client: ReauthCapableClient, token: string, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      client.removeListener('packetreceive', onPacket);
      client.removeListener('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onPacket = (packet: { cmd: string; reasonCode?: number }) => {
      if (packet.cmd === 'auth') done(packet.reasonCode === 0 ? undefined : new Error(`re-authentication answered 0x${(packet.reasonCode ?? 0).toString(16)}`));
      if (packet.cmd === 'disconnect') done(new Error(`re-authentication refused: DISCONNECT 0x${(packet.reasonCode ?? 0).toString(16)}`));
    };
    const onClose = () => done(new Error('connection closed during re-authentication'));
    const timer = setTimeout(() => done(new Error('no answer to re-authentication')), timeoutMs);
    client.on('packetreceive', onPacket);
    client.on('close', onClose);
    const send = (client as unknown as { _sendPacket(p: object): void })._sendPacket.bind(client);
    send({ cmd: 'auth', reasonCode: 0x19, properties: { authenticationMethod: 'JWT', authenticationData: Buffer.from(token) } });
  });
}
