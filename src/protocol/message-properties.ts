// The MQTT 5 properties an application message carries from its publisher to its subscribers,
// read from a PUBLISH or from a CONNECT's will: the one copy of that rule.
import type { IPublishPacket } from 'mqtt-packet';
import type { MessageProperties } from '../store/types.js';

type IncomingProperties = Pick<NonNullable<IPublishPacket['properties']>, 'payloadFormatIndicator' | 'contentType' | 'responseTopic' | 'correlationData' | 'userProperties'>;

/**
 * Properties forwarded unaltered to subscribers [MQTT-3.3.2-4, MQTT-3.3.2-15..17,
 * MQTT-3.3.2-20]; undefined when there are none. The topic alias and the expiry interval are
 * per hop, not copied (the expiry is kept as an absolute time on the message).
 */
export function forwardableProperties(p: IncomingProperties): MessageProperties | undefined {
  let out: MessageProperties | undefined;
  if (p.payloadFormatIndicator !== undefined) (out ??= {}).payloadFormatIndicator = p.payloadFormatIndicator;
  if (p.contentType !== undefined) (out ??= {}).contentType = p.contentType;
  if (p.responseTopic !== undefined) (out ??= {}).responseTopic = p.responseTopic;
  if (p.correlationData !== undefined) (out ??= {}).correlationData = p.correlationData;
  if (p.userProperties !== undefined) (out ??= {}).userProperties = p.userProperties;
  return out;
}
