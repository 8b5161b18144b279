# The interop client written only from docs/protocol.md (included by this directory's CMakeLists).
# It needs the Debian interpreter: python3-zmq and python3-msgpack are installed for it only.
add_test(NAME integration.python_client
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/python_client.py
                 --broker-bin $<TARGET_FILE:kbfleet-broker>
                 --worker-bin $<TARGET_FILE:kbfleet-worker>
                 --plugins ${PROJECT_SOURCE_DIR}/examples/plugins)
set_tests_properties(integration.python_client PROPERTIES TIMEOUT 60 LABELS integration)
