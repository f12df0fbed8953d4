"""The stderr filter: TensorFlow's start-up notices go, everything else stays, in order."""

import io

from capforge.quiet import NoiseFilter


def test_noise_lines_are_dropped_and_the_rest_passes_in_order() -> None:
    out = io.StringIO()
    sink = NoiseFilter(out)
    sink.write("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
               "I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers on your machine\nreal ")
    sink.write("warning: disk almost full\nE0000 00:00:2.0 1 cuda_platform.cc:52] failed call to cuInit\n")
    sink.write("WARNING:tensorflow:Issue encountered when serializing table_initializer.\nType is unsupported, "
               "or the types of the items don't match field type in CollectionDef. Note this is a warning\n"
               "'NoneType' object has no attribute 'name'\n")
    sink.write("\rpacking:  50%\rpacking: 100%")
    assert out.getvalue() == "real warning: disk almost full\n\rpacking:  50%\r"  # the last update waits
    sink.flush()
    assert out.getvalue().endswith("packing: 100%")
