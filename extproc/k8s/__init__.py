"""The one subpackage that talks to the Kubernetes API (official `kubernetes` client).

`informing` is a generic list+watch informer whose blocking client calls run on one worker
thread per informer and whose cache and handlers live on the asyncio loop; `listwatch` is the
thread side; `keys` turns the key Secret and ConfigMap into the edge's `KeyIndex`;
`directory` joins Sandboxes and Pods into routes for the edge; `resources` is the async
get/list/create/patch/delete the lifecycle backend uses; `identity` reads or creates the
router identity and token-seed Secrets; `keywriter` is `keys --kubernetes`; `client` loads
the in-cluster or kubeconfig credentials.
"""
