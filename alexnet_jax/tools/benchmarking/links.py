"""The split on real links: a prediction of each strategy's step time on named
pairs of devices joined by named links, from what one device measured and
what each strategy's per-device program sends.

A prediction, not a measurement. The model, per strategy on a pair:

    compute  t1 x share: t1 = one device's step time for the whole batch (the
             one measured here when the pair is this device; else the
             roofline bound on the pair's device over the fraction of it this
             run reached, or ASSUMED_ROOFLINE_FRACTION where that is unknown);
             share = the per-device program's FLOPs (XLA's count) over the
             layer table's FLOPs of the whole step
    talk     per collective a fixed latency, plus the bytes each device sends
             (ring algorithms, tools/hlo.py) over the link's bandwidth per
             direction x its efficiency
    step     compute + talk (no overlap), or max(compute, talk) (full overlap)

The collectives are read from the train step compiled for two host (CPU)
devices with the strategy's rules, batch and dtype: the same tensors the GPU
program moves (XLA may combine or split them differently there, which only
changes the latency term).
"""

import dataclasses

import jax

from alexnet_jax.core import flops
from alexnet_jax.core import parallel
from alexnet_jax.errors import UserError
from alexnet_jax.tools import hlo
from alexnet_jax.tools import placement
from alexnet_jax.tools.benchmarking import peaks
from alexnet_jax.tools.benchmarking import placements
from alexnet_jax.tools.benchmarking import roofline

# Where nothing better is known: the best AlexNet-class step we know of ran at
# about 26% MFU; a quarter of the roofline bound is in that range.
ASSUMED_ROOFLINE_FRACTION = 0.25
THIS = 'this'  # The pair's device is the one this run measured.
ASSUMPTIONS = (
    'one device\'s step time (measured here, or its roofline bound over the'
    ' fraction reached) x the per-device program\'s share of the FLOPs, plus a'
    ' fixed latency per collective and the bytes each device sends over the'
    ' link\'s bandwidth per direction x an assumed efficiency; no overlap of'
    ' compute and collectives (first figure) or full overlap (second);'
    ' collectives read from the step compiled for two host devices')
PAPER_IMAGES_PER_SEC = 230  # 90 epochs of 1.2M images in 5-6 days (Sec. 5, 7).


@dataclasses.dataclass(frozen=True)
class Link:
  name: str
  bytes_per_sec: float  # Per direction.
  efficiency: float  # Assumed fraction of it a collective reaches.
  latency: float  # Assumed seconds per collective.
  source: str


LINKS = {l.name: l for l in (
    Link('NVLink 4', 450e9, 0.8, 10e-6,
         'NVIDIA H100 datasheet: 900 GB/s NVLink per GPU, both directions'),
    Link('PCIe 5.0 x16', 63e9, 0.8, 20e-6,
         'PCI-SIG PCIe 5.0: 32 GT/s x 16 lanes, 128b/130b'),
    Link('PCIe 4.0 x16', 31.5e9, 0.8, 20e-6,
         'PCI-SIG PCIe 4.0: 16 GT/s x 16 lanes, 128b/130b'),
    Link('PCIe 2.0 x16', 8e9, 0.8, 20e-6,
         'PCI-SIG PCIe 2.0: 5 GT/s x 16 lanes, 8b/10b'),
)}


@dataclasses.dataclass(frozen=True)
class Pair:
  name: str
  device: str  # THIS, or a device kind of peaks.PEAKS and roofline.BANDWIDTHS.
  link: str
  # Devices outside those tables: (FLOP/s by dtype, bytes/s, source).
  spec: tuple | None = None


GTX_580 = ({'float32': 1.581e12}, 192.4e9,
           'NVIDIA GeForce GTX 580 specifications: 1581 GFLOP/s FP32, 192.4 GB/s')
PAIRS = {p.name: p for p in (
    Pair('2xH100-NVLink', 'NVIDIA H100 80GB HBM3', 'NVLink 4'),
    Pair('2xH100-PCIe5', 'NVIDIA H100 PCIe', 'PCIe 5.0 x16'),
    Pair('2xA100-PCIe4', 'NVIDIA A100 80GB PCIe', 'PCIe 4.0 x16'),
    Pair('2xGTX580-PCIe2', 'GTX 580', 'PCIe 2.0 x16', GTX_580),  # The paper's.
    Pair('2xthis-NVLink', THIS, 'NVLink 4'),
    Pair('2xthis-PCIe5', THIS, 'PCIe 5.0 x16'),
    Pair('2xthis-PCIe4', THIS, 'PCIe 4.0 x16'),
)}


def check_pairs(names) -> None:
  for name in names:
    if name not in PAIRS:
      raise UserError(
          f'Unknown pair of devices and link {name!r} in --links; known:'
          f' {", ".join(PAIRS)} (tools/benchmarking/links.py lists each'
          ' device and link with its source).')


def step_seconds(t1: float, share: float, sent_bytes: float, collectives: int,
                 link: Link, overlap: bool) -> float:
  """The predicted step: see the module docstring."""
  compute = t1 * share
  talk = collectives * link.latency + sent_bytes / (link.bytes_per_sec * link.efficiency)
  return max(compute, talk) if overlap else compute + talk


def strategy_traffic(settings, strategies, batch_size: int, dtype: str) -> dict:
  """Per strategy on two devices: collectives, bytes each device sends and
  the per-device program's share of the step's FLOPs (compiled, never run,
  for two host devices)."""
  cpus = jax.devices('cpu')
  if len(cpus) < 2:
    raise UserError('The link prediction compiles each strategy for two host'
                    ' devices, and JAX has one (set XLA_FLAGS='
                    '--xla_force_host_platform_device_count=2).')
  towers = settings.model.network.towers
  out = {}
  for s in strategies:
    mesh_shape = parallel.strategy_mesh_shape(s, 2, towers)
    p = placements.placed(settings, strategy=s, data=mesh_shape[parallel.DATA],
                          model_axis=mesh_shape[parallel.MODEL],
                          batch_size=batch_size, dtype=dtype)
    mesh = parallel.make_mesh(p.mesh, devices=cpus[:2])
    compiled = placement.compiled_train_step(p, mesh)
    found = hlo.collectives(compiled.as_text(), dict(mesh.shape),
                            scopes=placement.crossings(p), data_axis=p.rules.batch)
    work = placements.compiled_flops(compiled)
    whole = flops.train_flops_per_image(p.model) * batch_size
    out[s] = {'collectives': len(found),
              'sent_bytes_per_device': sum(c.sent_bytes for c in found),
              'share': work / whole if work else 0.5,
              'share_source': 'XLA cost_analysis' if work else 'assumed 1/2'}
  return out


def single_device_seconds(pair: Pair, base_row: dict, costs_for) -> tuple[float, str]:
  """t1 on the pair's device: measured here, or derived from its roofline."""
  if pair.device == THIS:
    return base_row['seconds_per_step'], 'measured here (one_device)'
  dtype = base_row['dtype']
  if pair.spec:
    rates, bandwidth, source = pair.spec
    dtype = dtype if dtype in rates else 'float32'
    peak = rates[dtype]
  else:
    found = peaks.table_peak(pair.device, dtype)
    peak, source = found
    bandwidth, bw_source = roofline.table_bandwidth(pair.device)
    source = f'{source}; {bw_source}'
  fraction = base_row.get('roofline_fraction')
  basis = 'the fraction this run reached'
  if not fraction:
    fraction, basis = ASSUMED_ROOFLINE_FRACTION, 'assumed'
  bound = roofline.bound(costs_for(dtype), peak, bandwidth)['bound_seconds']
  return bound / fraction, (f'roofline bound {1e3 * bound:.2f} ms ({dtype};'
                            f' {source}) / {fraction:.2f} ({basis})')


def predict(settings, record: dict, pair_names, strategies) -> dict:
  """Predicted rows for every one_device setting of `record` x pair x
  strategy, beside the measured rows that exist."""
  check_pairs(pair_names)
  rows = []
  for base in (r for r in record['rows'] if r['name'] == placements.BASELINE):
    batch = base['batch_size']
    traffic = strategy_traffic(settings, strategies, batch, base['dtype'])
    costs_for = lambda dtype, b=batch: roofline.layer_costs(settings.model, b, dtype)
    for name in pair_names:
      pair, link = PAIRS[name], LINKS[PAIRS[name].link]
      t1, t1_source = single_device_seconds(pair, base, costs_for)
      for s, t in traffic.items():
        times = {overlap: step_seconds(t1, t['share'], t['sent_bytes_per_device'],
                                       t['collectives'], link, overlap)
                 for overlap in (False, True)}
        rows.append({
            'pair': name, 'device': pair.device, 'link': link.name,
            'strategy': s, 'batch_size': batch, 'dtype': base['dtype'],
            'single_device_seconds': t1, 'single_device_source': t1_source,
            **t, 'predicted_seconds_no_overlap': times[False],
            'predicted_seconds_full_overlap': times[True],
            'predicted_images_per_sec': [batch / times[False], batch / times[True]]})
  return {'kind': 'prediction', 'pairs': {n: dataclasses.asdict(LINKS[PAIRS[n].link])
                                          for n in pair_names},
          'assumptions': ASSUMPTIONS,
          'paper_images_per_sec': PAPER_IMAGES_PER_SEC, 'rows': rows}


def format_prediction(pred: dict, record: dict) -> list[str]:
  """The predicted rows as a table, the assumptions, the paper's check."""
  from alexnet_jax.tools.tables import format_table  # pylint: disable=import-outside-toplevel
  lines = ['PREDICTED (not measured) step times on two devices over a link:']
  lines += format_table(
      ['pair', 'strategy', 'batch', 'dtype', 'one device ms', 'share', 'collectives',
       'MB sent/device', 'ms (no overlap - overlap)', 'images/s'],
      [[r['pair'], r['strategy'], str(r['batch_size']), r['dtype'],
        f'{1e3 * r["single_device_seconds"]:.2f}', f'{r["share"]:.2f}',
        str(r['collectives']), f'{r["sent_bytes_per_device"] / 1e6:.1f}',
        (f'{1e3 * r["predicted_seconds_no_overlap"]:.2f} -'
         f' {1e3 * r["predicted_seconds_full_overlap"]:.2f}'),
        '{:.0f} - {:.0f}'.format(*r['predicted_images_per_sec'])]
       for r in pred['rows']], right={2, 4, 5, 6, 7})
  for name, link in pred['pairs'].items():
    lines.append(f'{name}: {link["name"]} {link["bytes_per_sec"] / 1e9:g} GB/s per'
                 f' direction x {link["efficiency"]:g} assumed efficiency,'
                 f' {1e6 * link["latency"]:g} us assumed per collective ({link["source"]}).')
  for r in pred['rows']:
    if r['pair'] == '2xGTX580-PCIe2' and r['strategy'] == 'towers':
      lines.append(
          f'Sanity check: the paper\'s two GTX 580s (5-6 days for 90 epochs, about'
          f' {pred["paper_images_per_sec"]} images/s); predicted at batch'
          f' {r["batch_size"]}: {r["predicted_images_per_sec"][0]:.0f}-'
          f'{r["predicted_images_per_sec"][1]:.0f} images/s (one GTX 580:'
          f' {r["single_device_source"]}).')
  if record['backend'] != 'cpu' and record['num_devices'] > 1:
    lines.append('Measured beside them: the strategy rows of the table above.')
  lines.append('Model: ' + ' '.join(pred['assumptions'].split()))
  return lines
