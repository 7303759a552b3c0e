import httpx, time, sys
n=int(sys.argv[1]); model=sys.argv[2] if len(sys.argv)>2 else "hybridgate/cloud"
body={"model":model,"messages":[{"role":"user","content":"What is the capital of France? Answer briefly."}],"max_tokens":16}
with httpx.Client(base_url="http://127.0.0.1:18931", headers={"Authorization":"Bearer sk-bench"}) as c:
    for _ in range(50): c.post("/v1/chat/completions", json=body).raise_for_status()
    t=time.perf_counter()
    for _ in range(n): c.post("/v1/chat/completions", json=body).raise_for_status()
    print("ms/req", (time.perf_counter()-t)/n*1000)
