"""A built split's records, decoded as TFDS's data source decodes them, with the float lists read as bytes.

`source[i]` of a TFDS ArrayRecord data source parses the record's tf.Example and turns each repeated field into
numpy with `np.array(repeated_container)`, one Python float at a time: for a 256 px record (58 frames: 54k landmark
numbers, 15k audio numbers, the coefficients) that is about half of the record read, ~3-6 ms of ~9.5
(bench/pipeline_appetite.py). A `FloatList` is stored packed (tag, byte length, little-endian float32s), so
`np.frombuffer` of its serialised bytes gives the same numbers in microseconds. `FastSource` does only that
differently and hands everything else (int64 and bytes lists, shapes, the nesting, image decoders) to TFDS's own
parser, so its records equal `source[i]`'s bit for bit (tests/test_datasets.py checks every record of a build).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np


def packed_floats(float_list) -> np.ndarray:
  """The values of a tf.train.FloatList as a float32 array, read from its packed serialisation."""
  raw = float_list.SerializeToString()
  if not raw:
    return np.zeros(0, np.float32)
  n, shift, i = 0, 0, 1  # raw[0] is the tag of field 1, wire type 2 (packed); then the byte length as a varint.
  while True:
    b = raw[i]
    n |= (b & 0x7F) << shift
    i += 1
    shift += 7
    if b < 0x80:
      break
  if raw[0] != 0x0A or i + n != len(raw) or n % 4:  # Not one packed run (never written by protobuf): the slow way.
    return np.array(float_list.value, np.float32)
  return np.frombuffer(raw, '<f4', count=n // 4, offset=i)


class _FloatList:
  def __init__(self, value: np.ndarray):
    self.value = value


class _Feature:
  """A tf.train.Feature whose float_list.value is already a numpy array (the rest is the proto's)."""

  def __init__(self, feature):
    self._feature = feature

  def HasField(self, name: str) -> bool:  # noqa: N802  (the proto's method name)
    return self._feature.HasField(name)

  @property
  def float_list(self) -> _FloatList:
    return _FloatList(packed_floats(self._feature.float_list))

  def __getattr__(self, name: str) -> Any:
    return getattr(self._feature, name)


class _Features(Mapping):
  """tf.train.Features.feature with each Feature wrapped in `_Feature`."""

  def __init__(self, feature_map):
    self._map = feature_map

  def __getitem__(self, key: str) -> _Feature:
    return _Feature(self._map[key])

  def __contains__(self, key: object) -> bool:
    return key in self._map

  def __iter__(self) -> Iterator[str]:
    return iter(self._map)

  def __len__(self) -> int:
    return len(self._map)


class _ProtoFeatures:
  def __init__(self, features):
    self.feature = _Features(features.feature)


class FastSource:
  """A TFDS ArrayRecord data source (`builder.as_data_source()[split]`) with `__len__`, `__getitem__` and
  iteration, whose records equal the source's own (see the module docstring). Picklable (grain's workers)."""

  def __init__(self, source):
    self.source = source
    self._parse = None

  def __len__(self) -> int:
    return len(self.source)

  def _parser(self):
    if self._parse is None:
      from tensorflow_datasets.core import example_parser, utils
      from tensorflow_datasets.proto import tf_example_pb2
      features = self.source.dataset_info.features
      specs = features.get_serialized_info()
      flat = utils.flatten_nest_dict(specs)

      def parse(raw: bytes) -> dict[str, Any]:
        example = tf_example_pb2.Example.FromString(raw)
        # TFDS's own per-feature conversion (shapes, dtypes, ragged rows), on the wrapped features.
        arrays = example_parser._features_to_numpy(  # pylint: disable=protected-access
            _ProtoFeatures(example.features), flat)
        return features.decode_example_np(utils.pack_as_nest_dict(arrays, specs), decoders=self.source.decoders)

      self._parse = parse
    return self._parse

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._parser()(self.source.data_source[int(index)])

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return (self[i] for i in range(len(self)))

  def __getstate__(self) -> dict[str, Any]:
    return {'source': self.source, '_parse': None}  # The parser is a closure: made again where it is used.
