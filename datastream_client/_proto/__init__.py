"""The client's copy of the generated messages (``make protos`` writes it from protos/datastream.proto).

Generated under the same file name as the server's copy, so both load into one
process; tests/client/test_proto.py checks that they are the same descriptor.
"""
