import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type {
  DnsControlMode,
  DnsSettings,
  SystemDnsControl,
  SystemDnsProbes,
  TrampleEvent,
} from '@gatehouse/netconfig';
import { silentLogger } from '@gatehouse/logging';
import { NO_DNS_SETTINGS_REASON, SystemDnsSession } from '../src/system-dns-session.ts';

const PLAIN_FILE: SystemDnsProbes = {
  resolvConf: { kind: 'file', content: 'nameserver 192.168.1.1\n', isMountPoint: false },
  resolvedOnBus: false,
  networkManagerOnBus: false,
};
const SETTINGS: DnsSettings = { servers: ['10.9.0.1'], searchDomains: ['corp.example'] };

const RESOLVED_STUB: SystemDnsProbes = {
  resolvConf: { kind: 'file', content: 'nameserver 127.0.0.53\n', isMountPoint: false },
  resolvedOnBus: true,
  networkManagerOnBus: false,
};

/** Each mode's control reports the system's resolvers as that mode reads them. */
const SYSTEM_RESOLVERS: Record<DnsControlMode, string[]> = {
  'etc-resolv-conf': ['192.168.1.1'],
  'systemd-resolved': ['192.168.1.1', '2001:db8::53'],
  disabled: ['192.168.1.1'],
};

function fakeSystem(probes: SystemDnsProbes = PLAIN_FILE) {
  const calls: string[] = [];
  let onEvent: ((event: TrampleEvent) => void) | undefined;
  const createControl = (mode: DnsControlMode): SystemDnsControl => ({
    mode,
    apply: async (settings) => {
      calls.push(`${mode} apply ${settings.servers.join(',')}`);
    },
    isTrampled: async () => false,
    systemResolvers: async () => {
      calls.push(`${mode} system resolvers`);
      return SYSTEM_RESOLVERS[mode];
    },
    restore: async () => {
      calls.push(`${mode} restore`);
    },
    watch: (settings, listener) => {
      calls.push(`${mode} watch ${settings.servers.join(',')}`);
      onEvent = listener;
      return { check: async () => undefined, stop: () => calls.push(`${mode} unwatch`) };
    },
  });
  const probe = async () => {
    calls.push('probe');
    return probes;
  };
  return { calls, createControl, probe, trample: (event: TrampleEvent) => onEvent?.(event) };
}

void describe('SystemDnsSession', () => {
  void it('repairs a crashed run before probing, then applies and watches', async () => {
    const system = fakeSystem();
    const session = await SystemDnsSession.start({
      setting: 'auto',
      ...system,
      logger: silentLogger,
    });
    assert.equal(session.decision.mode, 'etc-resolv-conf');
    assert.deepEqual(session.previousServers, ['192.168.1.1']);
    await session.use(SETTINGS);
    await session.restore();
    await session.restore();
    assert.deepEqual(system.calls, [
      'disabled restore',
      'probe',
      'etc-resolv-conf system resolvers',
      'etc-resolv-conf apply 10.9.0.1',
      'etc-resolv-conf watch 10.9.0.1',
      'etc-resolv-conf unwatch',
      'etc-resolv-conf restore',
    ]);
  });

  void it("takes the system's resolvers from the chosen mode's control, before applying", async (t) => {
    const cases: Array<{ name: string; probes: SystemDnsProbes; expected: string[] }> = [
      { name: 'resolv.conf file', probes: PLAIN_FILE, expected: ['192.168.1.1'] },
      {
        name: "resolved's stub in resolv.conf: resolved's servers, not 127.0.0.53",
        probes: RESOLVED_STUB,
        expected: ['192.168.1.1', '2001:db8::53'],
      },
    ];
    for (const c of cases) {
      await t.test(c.name, async () => {
        const system = fakeSystem(c.probes);
        const session = await SystemDnsSession.start({
          setting: 'auto',
          ...system,
          logger: silentLogger,
        });
        assert.deepEqual(session.previousServers, c.expected);
        assert.equal(system.calls.at(-1), `${session.decision.mode} system resolvers`);
      });
    }
  });

  void it('reports applied, the disabled reason, or that DNS= is empty', async (t) => {
    const cases: Array<{
      name: string;
      setting: 'auto' | 'disabled';
      settings: DnsSettings;
      expected: unknown;
    }> = [
      {
        name: 'applied',
        setting: 'auto',
        settings: SETTINGS,
        expected: { ...SETTINGS, reapplied: 0, checkFailures: 0, applied: true },
      },
      {
        name: 'disabled',
        setting: 'disabled',
        settings: SETTINGS,
        expected: {
          ...SETTINGS,
          reapplied: 0,
          checkFailures: 0,
          applied: false,
          reason:
            'DNS control is disabled: set explicitly (--dns-control or GATEHOUSE_DNS_CONTROL)',
        },
      },
      {
        name: 'no DNS=',
        setting: 'auto',
        settings: { servers: [], searchDomains: [] },
        expected: {
          servers: [],
          searchDomains: [],
          reapplied: 0,
          checkFailures: 0,
          applied: false,
          reason: NO_DNS_SETTINGS_REASON,
        },
      },
    ];
    for (const c of cases) {
      await t.test(c.name, async () => {
        const system = fakeSystem();
        const session = await SystemDnsSession.start({
          setting: c.setting,
          ...system,
          logger: silentLogger,
        });
        await session.use(c.settings);
        assert.deepEqual(session.status(), c.expected);
        if (c.name !== 'applied') assert.ok(!system.calls.some((call) => call.includes('apply')));
      });
    }
  });

  void it('switching settings re-watches the new ones; a failed apply is still restored', async () => {
    const system = fakeSystem();
    const warnings: string[] = [];
    const session = await SystemDnsSession.start({
      setting: 'etc-resolv-conf',
      ...system,
      logger: { ...silentLogger, warn: (message) => warnings.push(message) },
    });
    await session.use(SETTINGS);
    system.trample({ kind: 'reapplied' });
    system.trample({ kind: 'error', error: new Error('EIO reading resolv.conf') });
    assert.match(warnings[0] ?? '', /overwrote the system DNS settings: applied them again/);
    assert.match(warnings[1] ?? '', /checking the system DNS settings failed: EIO reading/);
    assert.deepEqual(
      [session.status().reapplied, session.status().checkFailures],
      [1, 1],
      'each trample and failed check is counted',
    );
    await session.use({ servers: ['100.100.111.1'], searchDomains: [] });
    assert.deepEqual(system.calls.slice(-3), [
      'etc-resolv-conf unwatch',
      'etc-resolv-conf apply 100.100.111.1',
      'etc-resolv-conf watch 100.100.111.1',
    ]);

    const failing = fakeSystem();
    const broken = await SystemDnsSession.start({
      setting: 'etc-resolv-conf',
      probe: failing.probe,
      createControl: (mode) => ({
        ...failing.createControl(mode),
        apply: async () => {
          throw new Error('EROFS');
        },
      }),
      logger: silentLogger,
    });
    await assert.rejects(broken.use(SETTINGS), /EROFS/);
    await broken.restore();
    assert.equal(failing.calls.at(-1), 'etc-resolv-conf restore');
  });
});
