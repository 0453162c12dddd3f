#!/usr/bin/env python3
"""Import circles between the source files of each crate: a file's `use
crate::...` and `use super::...` paths (comments and tests left out) are
edges to the files that define them; a strongly connected set of two or
more files is a circle, printed, and the exit status is 1. A module's own
descendants and ancestors are not counted (a parent declares its
children, and children use their parent's shared types)."""
import os, re, sys
def modpath(root, f):
    rel=os.path.relpath(f, root)[:-3].split('/')
    if rel[-1] in ('mod','lib','main'): rel=rel[:-1]
    return tuple(rel)
def files(root):
    for d,_,fs in os.walk(root):
        for f in fs:
            if f.endswith('.rs'): yield os.path.join(d,f)
found = []
os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
for crate in ['datasets/src', 'engine/src', 'jobs/src', 'workers/src', 'src']:
    mods={}
    for f in files(crate): mods[modpath(crate,f)]=f
    def resolve(path):
        # longest prefix that is a module
        for k in range(len(path),0,-1):
            if tuple(path[:k]) in mods: return tuple(path[:k])
        return None
    edges={m:set() for m in mods}
    for m,f in mods.items():
        text=open(f).read()
        text=text.split('#[cfg(test)]')[0]
        text='\n'.join(l for l in text.split('\n') if not l.strip().startswith('//'))
        is_dir = f.endswith('mod.rs') or f.endswith('lib.rs') or f.endswith('main.rs')
        for u in re.findall(r'(?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+', text):
            parts=u.split('::')
            if parts[0]=='crate': base=[]; rest=parts[1:]
            else:
                base=list(m) if is_dir else list(m[:-1])
                rest=parts[1:]
                while rest and rest[0]=='super':
                    base=base[:-1]; rest=rest[1:]
                # super from non-dir file: parent module
                if not is_dir: pass
                else: base=base[:-1]
            t=resolve(tuple(base+rest))
            if t is not None and t!=m and not (t==m[:len(t)] ) and not (m==t[:len(m)]):
                edges[m].add(t)
    # find cycles via SCC
    index={};low={};st=[];on=set();res=[];c=[0]
    sys.setrecursionlimit(10000)
    def sc(v):
        index[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
        for w in edges[v]:
            if w not in index: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],index[w])
        if low[v]==index[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v:break
            if len(comp)>1: res.append(comp)
    for v in edges:
        if v not in index: sc(v)
    for comp in res:
        print(f"{crate}: import circle: {' -> '.join('/'.join(x) for x in comp)}")
        found.append(comp)

if found:
    sys.exit(1)
print('circles: none between files')
