(function(){var d=document.documentElement,n=0,t=[];function note(m){n++;t.push(String(m).slice(0,200));
d.setAttribute('data-js-errors',String(n));d.setAttribute('data-js-error-text',t.join(' | '))}
d.setAttribute('data-js-errors','0');
window.addEventListener('error',function(e){var x=e.target;if(x&&x!==window&&(x.src||x.href)){note('resource: '+(x.src||x.href))}
else{note(e.message||'error')}},true);
window.addEventListener('unhandledrejection',function(e){note('rejection: '+e.reason)});
var ce=console.error;console.error=function(){note([].join.call(arguments,' '));return ce.apply(console,arguments)};
window.__selftestParams=function(){var h=location.hash;if(h.indexOf('#selftest')!==0)return null;var p={};
h.slice(1).split('&').forEach(function(kv){var i=kv.indexOf('=');var k=i<0?kv:kv.slice(0,i);
p[k]=i<0?'':decodeURIComponent(kv.slice(i+1).replace(/\+/g,' '))});return p};})();
