//! Hosts only the interop tests (`tests/`): real third-party NSQ clients, tokio-nsq and pynsq,
//! publishing to and consuming from our nsqd over direct TCP connections. There is no library
//! code here.
