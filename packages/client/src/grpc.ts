/**
 * A name resolver for @grpc/grpc-js (an optional peer dependency; import this module as
 * `@switchboard/client/grpc`): gRPC clients dial `switchboard:///orders` (or
 * `switchboard:///<namespace>/orders`) and get the service's pickable instances (status
 * `up`, health not `critical`, weight > 0) from a live view, updated on every change.
 * Balancing across them is grpc-js's: the resolver asks for `round_robin` unless you give
 * another service config.
 */
import * as grpc from '@grpc/grpc-js';
import type { Instance } from '@switchboard/protocol';
import type { SwitchboardClient } from './client.js';
import type { ServiceOptions, ServiceView, ViewChange } from './view.js';

type GrpcUri = grpc.experimental.GrpcUri;
type Endpoint = grpc.experimental.Endpoint;
type ServiceConfig = { loadBalancingConfig: object[]; methodConfig: object[] };

/**
 * Resolver settings.
 *
 * @example
 * registerGrpcResolver(client, { scheme: 'sb', view: { tags: ['grpc'] } });
 */
export interface GrpcResolverOptions {
  /** URI scheme to register. Default `switchboard`. */
  scheme?: string;
  /** Filters of the views behind resolved targets. */
  view?: Omit<ServiceOptions, 'namespace'>;
  /** Service config handed to grpc-js. Default `{ loadBalancingConfig: [{ round_robin: {} }] }`. */
  serviceConfig?: ServiceConfig;
}

/** grpc-js before 1.13 called methods on a listener object; later versions call a function. */
interface LegacyListener {
  onSuccessfulResolution(endpoints: Endpoint[], serviceConfig: ServiceConfig | null, serviceConfigError: null, configSelector: null, attributes: Record<string, unknown>): void;
  onError(error: { code: number; details: string; metadata: grpc.Metadata }): void;
}

/**
 * The service (and namespace) of a gRPC target: `switchboard:///orders` is `orders` in the
 * client's namespace, `switchboard:///payments/orders` is `orders` in namespace `payments`.
 *
 * @example
 * parseTarget({ scheme: 'switchboard', path: '/payments/orders' }); // { namespace: 'payments', service: 'orders' }
 */
export function parseTarget(target: GrpcUri): { namespace: string | undefined; service: string } {
  const parts = target.path.replace(/^\/+/, '').split('/').filter((p) => p !== '');
  if (parts.length === 1) return { namespace: undefined, service: parts[0] as string };
  if (parts.length === 2) return { namespace: parts[0], service: parts[1] as string };
  throw new Error(`gRPC target path "${target.path}" is not <service> or <namespace>/<service>`);
}

function endpointsOf(instances: readonly Instance[]): Endpoint[] {
  return instances.filter((i) => i.status === 'up' && i.health !== 'critical' && i.weight > 0).map((i) => ({ addresses: [{ host: i.address, port: i.port }] }));
}

/**
 * Registers the `switchboard:` scheme with grpc-js, backed by `client`'s views.
 *
 * @example
 * import * as grpc from '@grpc/grpc-js';
 * import { connect } from '@switchboard/client';
 * import { registerGrpcResolver } from '@switchboard/client/grpc';
 * const client = await connect({ endpoints: ['http://127.0.0.1:7700'] });
 * registerGrpcResolver(client);
 * const stub = new OrdersClient('switchboard:///orders', grpc.credentials.createInsecure());
 */
export function registerGrpcResolver(client: SwitchboardClient, opts: GrpcResolverOptions = {}): void {
  const scheme = opts.scheme ?? 'switchboard';
  const serviceConfig: ServiceConfig = opts.serviceConfig ?? { loadBalancingConfig: [{ round_robin: {} }], methodConfig: [] };

  class SwitchboardResolver implements grpc.experimental.Resolver {
    private readonly view: ServiceView;
    private readonly service: string;
    private listening = false;
    private scheduled = false;
    /** What was last reported (the endpoints, or the failure): the same is not reported again. */
    private reported: string | null = null;
    private readonly onChange = (_c: ViewChange): void => this.schedule();

    constructor(
      target: GrpcUri,
      private readonly listener: grpc.experimental.ResolverListener | LegacyListener,
      _options: grpc.ChannelOptions,
    ) {
      const { namespace, service } = parseTarget(target);
      this.service = service;
      this.view = client.service(service, { ...opts.view, ...(namespace !== undefined && { namespace }) });
    }

    updateResolution(): void {
      if (!this.listening) {
        this.listening = true;
        // One listener per channel on a view shared by all of them.
        this.view.setMaxListeners(this.view.getMaxListeners() + 1);
        this.view.on('change', this.onChange);
      }
      this.view.ready().then(
        () => this.schedule(),
        (err: Error) => this.listening && this.fail(err.message),
      );
    }

    destroy(): void {
      // grpc-js destroys the resolver of an idle channel and asks the same object again when
      // a call comes: the next answer must be sent even if the list is the same.
      this.reported = null;
      if (!this.listening) return;
      this.listening = false;
      this.view.off('change', this.onChange);
      this.view.setMaxListeners(Math.max(0, this.view.getMaxListeners() - 1));
    }

    /** Coalesces a burst of changes into one update (never synchronous, as grpc-js asks). */
    private schedule(): void {
      if (this.scheduled) return;
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        if (this.listening) this.report();
      });
    }

    /**
     * Reports the endpoints, unless they are what was reported last. grpc-js asks for a new
     * resolution whenever a subchannel fails; answering each request with the same list
     * reset its backoff and made it ask again at once: one unreachable instance kept a core
     * busy (430,000 reports in 6 s). The view's changes come as they happen anyway.
     */
    private report(): void {
      const endpoints = endpointsOf(this.view.instances());
      const key = endpoints.length === 0 ? '!none' : endpoints.map((e) => JSON.stringify(e.addresses)).sort().join(' ');
      if (key === this.reported) return;
      this.reported = key;
      if (endpoints.length === 0) return this.fail(`no instance of ${this.service} is up and healthy`);
      const l = this.listener;
      if (typeof l === 'function') l({ ok: true, value: endpoints }, {}, { ok: true, value: serviceConfig as never }, '');
      else l.onSuccessfulResolution(endpoints, serviceConfig, null, null, {});
    }

    private fail(details: string): void {
      const error = { code: grpc.status.UNAVAILABLE, details, metadata: new grpc.Metadata() };
      const l = this.listener;
      if (typeof l === 'function') l({ ok: false, error }, {}, null, '');
      else l.onError(error);
    }

    static getDefaultAuthority(target: GrpcUri): string {
      return parseTarget(target).service;
    }
  }

  grpc.experimental.registerResolver(scheme, SwitchboardResolver);
}

/**
 * The gRPC target of a service.
 *
 * @example
 * new OrdersClient(grpcTarget('orders'), grpc.credentials.createInsecure());
 */
export function grpcTarget(service: string, namespace?: string, scheme = 'switchboard'): string {
  return namespace === undefined ? `${scheme}:///${service}` : `${scheme}:///${namespace}/${service}`;
}
